/* copyhunt HTML report: draws the page from its JSON data block (see copyhunt/report/html.py).
   Every string from the trace reaches the DOM through textContent or a DOM property, never as
   markup. Opening the file with #selftest appended runs the page's own checks (the browser test). */
(function () {
  "use strict";
  const errors = [];
  window.addEventListener("error", (e) => errors.push("error: " + (e.message || e.type)));
  document.addEventListener("securitypolicyviolation", (e) => errors.push("csp: " + e.violatedDirective + " " + e.blockedURI));
  const t0 = performance.now();

  const D = JSON.parse(document.getElementById("copyhunt-data").textContent);
  const FR = D.frames; // [short path, line, function, torch frame?, full path]
  const ST = D.stacks; // one entry per (call stack, op, kind, verdict)
  const RANK = new Map(D.verdicts.map((v, i) => [v, i]));
  const DEFAULT_OPEN = 0.05; // a node holding at least this share of the total starts expanded
  const MAX_DEFAULT_ROWS = 300; // ... as long as the first view stays this short
  const BIG_TREE = 300; // nodes from which off-screen rows skip layout (see report.css)
  const state = { metric: "b", hideTorch: true, tree: null, flameRoot: null, selected: null };

  const $ = (id) => document.getElementById(id);
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // --- numbers, worded as the terminal tables word them (copyhunt/units.py) ---
  function fixed1(v) { // Python's "{:.1f}": round half to even
    const x = v * 10, f = Math.floor(x), d = x - f;
    const n = d > 0.5 ? f + 1 : d < 0.5 ? f : (f % 2 === 0 ? f : f + 1);
    return (n / 10).toFixed(1);
  }
  function fmtBytes(n) {
    if (n < 1024) return n + " B";
    const units = ["KiB", "MiB", "GiB", "TiB"];
    let v = n, u = units[0];
    for (u of units) { v /= 1024; if (v < 1024) break; }
    return fixed1(v) + " " + u;
  }
  function fmtUs(x) { // "{:,.1f}"
    const [i, f] = fixed1(x).split(".");
    return i.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + "." + f;
  }
  const pct = (part, whole) => (whole ? fixed1((100 * part) / whole) + "%" : "-");
  const plural = (n, one, many) => n + " " + (n === 1 ? one : many);
  const isElim = (v) => v !== null && v !== "needed";
  const rank = (v) => (RANK.has(v) ? RANK.get(v) : D.verdicts.length);
  function stronger(a, b) { // the stronger of two verdicts (records.VERDICTS order), null = none
    if (a === null) return b;
    if (b === null) return a;
    return rank(a) < rank(b) || (rank(a) === rank(b) && a < b) ? a : b;
  }
  const METRICS = { b: "bytes", n: "copies", t: "device time" };
  const val = (node) => (state.metric === "b" ? node.b : state.metric === "n" ? node.n : node.t || 0);
  function fmtMetric(x) { return state.metric === "b" ? fmtBytes(x) : state.metric === "n" ? String(x) : fmtUs(x) + " us"; }
  const siteText = (fi) => (fi < 0 ? "(no source site)" : FR[fi][0] + ":" + FR[fi][1] + " " + FR[fi][2]);

  // --- the tree: built here from the entries, so "hide torch frames" can merge paths ---
  function newNode(kind, parent) {
    return { kind, parent, depth: parent ? parent.depth + 1 : -1, kids: new Map(), n: 0, z: 0, b: 0, t: null,
      e: 0, v: null, site: false, torch: false, frame: -1, items: [], id: 0, open: false };
  }
  function addTo(node, s) {
    node.n += s.n; node.z += s.z; node.b += s.b; node.e += s.e;
    if (s.t !== null) node.t = (node.t || 0) + s.t;
    node.v = stronger(node.v, s.v);
  }
  function buildTree() {
    const root = newNode("root", null), nodes = [root];
    for (const s of ST) {
      const path = state.hideTorch ? s.f.filter((fi) => !FR[fi][3] || fi === s.s) : s.f;
      let node = root;
      addTo(root, s);
      for (const fi of path) {
        let next = node.kids.get("f" + fi);
        if (!next) {
          next = newNode("frame", node);
          next.frame = fi; next.torch = !!FR[fi][3];
          node.kids.set("f" + fi, next); nodes.push(next);
        }
        if (fi === s.s) next.site = true;
        node = next;
        addTo(node, s);
      }
      const key = "c" + JSON.stringify([s.op, s.kind, s.v]);
      let leaf = node.kids.get(key);
      if (!leaf) {
        leaf = newNode("copy", node);
        leaf.op = s.op; leaf.copyKind = s.kind; leaf.verdict = s.v;
        node.kids.set(key, leaf); nodes.push(leaf);
      }
      addTo(leaf, s);
      leaf.items.push(s);
    }
    nodes.forEach((n, i) => { n.id = i; });
    return { root, nodes };
  }
  const kidsOf = (node) => [...node.kids.values()].sort((a, b) => val(b) - val(a) || a.id - b.id);

  function verdictCell(v, e, n) {
    if (v === null) return el("span", "verdict", "-");
    const cls = v === "needed" ? "v-needed" : RANK.has(v) ? "v-elim" : "v-unknown";
    const text = isElim(v) && e < n ? v + " (" + e + "/" + n + ")" : v;
    const c = el("span", "verdict " + cls, text);
    c.title = text;
    return c;
  }

  function renderRow(node, total) {
    const wrap = el("div", "node");
    const row = el("div", "row" + (D.timed ? "" : " untimed") + (node.torch ? " torch" : "") + (isElim(node.v) ? " elim" : "") + (node.site ? " is-site" : ""));
    row.setAttribute("role", "treeitem");
    row.setAttribute("aria-level", String(node.depth + 1));
    const label = el("span", "label");
    label.style.paddingLeft = 16 * node.depth + "px";
    const tw = el("button", "tw", "\u25b8");
    tw.type = "button";
    tw.setAttribute("aria-label", "expand");
    const share = el("span", "share"), fill = el("span", "fill");
    const part = total ? val(node) / total : 0;
    fill.style.width = Math.max(0, Math.min(100, 100 * part)) + "%";
    share.appendChild(fill);
    label.append(tw, share, el("span", "pct", pct(val(node), total)));
    if (node.kind === "frame") {
      const f = FR[node.frame];
      const fn = el("span", "fn", f[2]), loc = el("span", "loc", f[0] + ":" + f[1]);
      fn.title = f[2];
      loc.title = f[4] + ":" + f[1];
      label.append(fn, loc);
      if (node.site) label.appendChild(el("span", "tag site", "site"));
    } else {
      const op = el("span", "fn", node.op);
      op.title = node.op;
      label.append(op, el("span", "tag", node.copyKind));
      if (node.z) label.appendChild(el("span", "tag", node.z + " noop"));
    }
    row.append(label, el("span", "num", node.n), el("span", "num", fmtBytes(node.b)));
    if (D.timed) row.appendChild(el("span", "num", node.t === null ? "-" : fmtUs(node.t)));
    row.appendChild(verdictCell(node.v, node.e, node.n));
    wrap.appendChild(row);
    node.wrap = wrap; node.row = row; node.tw = tw; node.kidsEl = null; node.open = false; node.total = total;
    row.setAttribute("aria-expanded", "false");
    tw.addEventListener("click", (ev) => { ev.stopPropagation(); setOpen(node, !node.open); });
    row.addEventListener("click", () => setOpen(node, !node.open));
    return wrap;
  }

  function setOpen(node, open) {
    if (open && !node.kidsEl) {
      node.kidsEl = el("div", "kids");
      node.kidsEl.setAttribute("role", "group");
      if (node.kind === "copy") node.kidsEl.appendChild(details(node));
      else for (const k of kidsOf(node)) node.kidsEl.appendChild(renderRow(k, node.total));
      node.wrap.appendChild(node.kidsEl);
    }
    if (node.kidsEl) node.kidsEl.hidden = !open;
    node.open = open;
    node.row.setAttribute("aria-expanded", open ? "true" : "false");
    node.tw.textContent = open ? "\u25be" : "\u25b8";
    node.tw.setAttribute("aria-label", open ? "collapse" : "expand");
  }

  function para(key, text, cls) {
    const p = el("p");
    p.append(el("span", "k", key + ": "), el(cls ? "code" : "span", cls || "", text));
    return p;
  }
  // copyhunt verify's result for the site ("verified" holds on the input it ran).
  function proof(pf) {
    const p = para("proof", pf[0] + ": " + pf[1]);
    p.classList.add("proof-" + (pf[0] === "refuted" ? "refuted" : pf[0] === "verified" ? "verified" : "untested"));
    return p;
  }
  function names(list, total) { return list.join(", ") + (total > list.length ? " (+" + (total - list.length) + " more)" : ""); }
  function details(node) {
    const s = node.items[0];
    const box = el("div", "details" + (isElim(node.v) ? "" : " needed"));
    box.style.marginLeft = 16 * node.depth + 24 + "px";
    box.appendChild(para("site", siteText(s.s)));
    if (s.src !== null) box.appendChild(para("source", s.src, "src"));
    let verdict = node.v === null ? "not judged" : node.v;
    if (node.v !== null) verdict += ": " + node.e + " of " + plural(node.n, "copy", "copies") + " look eliminable";
    box.appendChild(para("verdict", verdict));
    if (s.r !== null) box.appendChild(para(s.rn > 1 ? "why (first of " + s.rn + " reasons)" : "why", s.r));
    if (s.g !== null) box.appendChild(para("suggestion", s.g));
    if (s.pf) box.appendChild(proof(s.pf));
    if (s.m.length) box.appendChild(para("modules", names(s.m, s.mn)));
    if (s.rg.length) box.appendChild(para("regions", names(s.rg, s.rgn)));
    if (node.z) box.appendChild(para("noop", plural(node.z, "copy moves", "copies move") + " 0 bytes (same storage and layout)"));
    if (node.items.length > 1) box.appendChild(para("merged", node.items.length + " call stacks that differ only in hidden torch frames; the first is described"));
    return box;
  }

  function renderTree() {
    state.tree = buildTree();
    const tree = $("tree"), root = state.tree.root, total = val(root);
    tree.textContent = "";
    tree.classList.toggle("big", state.tree.nodes.length > BIG_TREE);
    root.total = total;
    if (!ST.length) tree.appendChild(el("p", "hint", noCopies()));
    for (const k of kidsOf(root)) tree.appendChild(renderRow(k, total));
    let shown = root.kids.size;
    (function openBig(node) {
      for (const k of kidsOf(node)) {
        const big = total ? val(k) / total >= DEFAULT_OPEN : true;
        if (!big || shown + k.kids.size > MAX_DEFAULT_ROWS) continue;
        if (k.kind === "copy" && k.items[0].r === null) continue;
        setOpen(k, true);
        shown += k.kids.size;
        openBig(k);
      }
    })(root);
    const head = $("tree-head");
    head.className = "tree-head" + (D.timed ? "" : " untimed");
    head.textContent = "";
    head.append(el("span", "", "Call stack (outermost first; share of " + METRICS[state.metric] + ")"), el("span", "num", "Count"), el("span", "num", "Bytes"));
    if (D.timed) head.appendChild(el("span", "num", "Dev us"));
    head.appendChild(el("span", "", "Verdict"));
    state.flameRoot = null;
    renderFlame();
  }

  function reveal(node) {
    const chain = [];
    for (let a = node; a && a.kind !== "root"; a = a.parent) chain.unshift(a);
    for (const a of chain.slice(0, -1)) setOpen(a, true);
    if (state.selected && state.selected.row) state.selected.row.classList.remove("selected");
    node.row.classList.add("selected");
    state.selected = node;
    node.row.scrollIntoView({ block: "nearest" });
  }

  // --- flame graph (an icicle: callers on top), drawn from the same tree ---
  function renderFlame() {
    const box = $("flame"), top = state.flameRoot || state.tree.root, total = val(top);
    box.textContent = "";
    $("flame-reset").hidden = !state.flameRoot;
    if (!total) {
      box.appendChild(el("p", "hint", ST.length ? "Nothing to draw: the " + METRICS[state.metric] + " of every copy is 0." : noCopies()));
      box.style.height = "auto";
      return;
    }
    let depth = 0, drawn = 0;
    const chain = [];
    for (let a = top; a && a.kind !== "root"; a = a.parent) chain.unshift(a);
    chain.forEach((a, d) => block(a, 0, 1, d)); // the zoomed node and its callers, full width
    (function place(node, x, w, d) {
      let cx = x;
      for (const k of kidsOf(node)) {
        const kw = (w * val(k)) / val(node);
        if (kw >= 0.002 && drawn < 3000) { block(k, cx, kw, d); place(k, cx, kw, d + 1); }
        cx += kw;
      }
    })(top, 0, 1, chain.length);
    box.style.height = 20 * (depth + 1) + 2 + "px";
    function block(node, x, w, d) {
      const b = el("div", "blk" + (node.kind === "copy" ? " copy" : "") + (node.site ? " site" : "") + (node.torch ? " torch" : "") + (node.kind === "copy" && isElim(node.v) ? " elim" : ""));
      b.style.left = 100 * x + "%";
      b.style.width = 100 * w + "%";
      b.style.top = 20 * d + "px";
      const f = node.kind === "frame" ? FR[node.frame] : null;
      b.textContent = f ? f[2] + " " + f[0].split(/[\\/]/).pop() + ":" + f[1] : node.op + (node.v ? " [" + node.v + "]" : "");
      b.title = (f ? f[2] + "  " + f[4] + ":" + f[1] : node.op + " " + node.copyKind) + "\n" + plural(node.n, "copy", "copies") + ", " + fmtBytes(node.b) +
        (node.t !== null ? ", " + fmtUs(node.t) + " us" : "") + (node.v ? "\nverdict: " + node.v : "");
      b.addEventListener("click", () => {
        state.flameRoot = node === state.flameRoot || node.kind === "copy" ? state.flameRoot : node;
        renderFlame();
        reveal(node);
      });
      box.appendChild(b);
      depth = Math.max(depth, d);
      drawn++;
    }
  }

  const noCopies = () => (D.meta.showing.length ? "No copies match the filters." : "No copies recorded.");

  // --- header, summary, sites, bench ---
  function renderMeta() {
    const m = D.meta, dl = $("meta");
    if (m.target) $("title-target").textContent = m.target;
    document.title = "copyhunt: " + (m.target || "report");
    const item = (k, v, cls) => { if (v === null || v === "") return; dl.append(el("dt", "", k), el("dd", cls || "", v)); };
    item("target", m.target === null ? null : [m.target].concat(m.argv).join(" "));
    item("device", m.device === null ? null : m.device + (m.torch ? " (torch " + m.torch + ")" : ""));
    item("started", m.started === null ? null : m.started + (m.duration_s !== null ? ", ran " + m.duration_s.toFixed(2) + " s" : ""));
    item("status", m.complete ? "complete" : "INCOMPLETE: " + (m.error || "the run did not finish"), m.complete ? "" : "bad");
    const filters = m.filters.join(", ") + (m.showing.length ? (m.filters.length ? "; " : "") + "showing " + m.showing.join(", ") : "");
    item("filters", filters);
    item("trace file", m.trace_file);
    for (const n of m.notes) $("notes").appendChild(el("li", "", "note: " + n));
  }
  function card(label, value, sub) {
    const c = el("div", "card");
    c.append(el("div", "label", label), el("div", "value", value));
    if (sub) c.appendChild(el("div", "sub", sub));
    return c;
  }
  function renderSummary() {
    const T = D.totals, box = $("summary");
    box.appendChild(card("copies", String(T.copies), T.noop ? plural(T.noop, "noop copy moves", "noop copies move") + " 0 bytes" : null));
    box.appendChild(card("bytes written", fmtBytes(T.bytes)));
    if (D.timed) box.appendChild(card("device time", fmtUs(T.us) + " us", D.meta.gpu_us ? pct(T.us, D.meta.gpu_us) + " of " + fmtUs(D.meta.gpu_us) + " us GPU time" : null));
    if (D.judged) {
      const sub = fmtBytes(T.elim_bytes) + (T.elim_us !== null ? ", " + fmtUs(T.elim_us) + " us" : "") + " look eliminable";
      const c = card("eliminable", T.elim + " of " + plural(T.copies, "copy", "copies"), sub);
      const chips = el("div", "chips");
      for (const [v, n, b] of T.by_verdict) chips.appendChild(el("span", "verdict " + (v === "needed" ? "v-needed" : RANK.has(v) ? "v-elim" : "v-unknown"), v + ": " + n + ", " + fmtBytes(b)));
      c.appendChild(chips);
      box.appendChild(c);
    } else {
      box.appendChild(card("eliminable", "not judged", "this trace carries no verdicts"));
    }
    const lo = T.left_out;
    if (lo.stacks) $("left-out").textContent = plural(lo.stacks, "smaller call stack", "smaller call stacks") + " (" + plural(lo.copies, "copy", "copies") + ", " + fmtBytes(lo.bytes) + ") are left out of the tree, the flame graph and the sites; the totals above include them.";
  }
  function tableRow(cells, numeric, tag) {
    const tr = el("tr");
    cells.forEach((c, i) => { const td = el(tag || "td", numeric[i] ? "num" : ""); if (c instanceof Node) td.appendChild(c); else td.textContent = c; tr.appendChild(td); });
    return tr;
  }
  function renderSites() {
    const groups = new Map();
    for (const s of ST) {
      let g = groups.get(s.s);
      if (!g) { g = { s: s.s, n: 0, z: 0, b: 0, t: null, e: 0, v: null, ops: new Set(), kinds: new Set(), why: null }; groups.set(s.s, g); }
      addTo(g, s);
      g.ops.add(s.op); g.kinds.add(s.kind);
      if (!g.why && isElim(s.v) && s.r !== null) g.why = s;
    }
    const rows = [...groups.values()].sort((a, b) => b.b - a.b || b.n - a.n);
    const table = $("sites"), head = ["Source site", "Op", "Kind", "Count", "Bytes", "Share"];
    if (D.timed) head.push("Dev us", "GPU %");
    head.push("Verdict");
    const numeric = head.map((h) => ["Count", "Bytes", "Share", "Dev us", "GPU %"].includes(h));
    table.appendChild(tableRow(head, numeric, "th"));
    for (const g of rows) {
      const cells = [siteText(g.s), [...g.ops].sort().join(", "), [...g.kinds].sort().join(","), g.z ? g.n + " (" + g.z + " noop)" : String(g.n), fmtBytes(g.b), pct(g.b, D.totals.bytes)];
      if (D.timed) cells.push(g.t === null ? "-" : fmtUs(g.t), g.t === null ? "-" : pct(g.t, D.meta.gpu_us));
      cells.push(verdictCell(g.v, g.e, g.n));
      table.appendChild(tableRow(cells, numeric));
      if (g.why) {
        const tr = el("tr", "why"), td = el("td");
        td.colSpan = cells.length;
        td.append(para(g.why.v, g.why.r), ...(g.why.g !== null ? [para("suggestion", g.why.g)] : []), ...(g.why.pf ? [proof(g.why.pf)] : []));
        tr.appendChild(td);
        table.appendChild(tr);
      }
    }
  }
  function renderBench() {
    if (!D.bench && !D.plot) return;
    $("bench-section").hidden = false;
    if (D.bench) {
      const B = D.bench;
      $("bench-info").textContent = [B.preset, B.layers !== null ? B.layers + " layers" : null, B.device, B.backend ? "backend " + B.backend : null, B.smoke ? "CPU smoke run" : null].filter((x) => x).join(", ");
      const numeric = B.columns.map((c) => c !== "mode");
      const t = $("bench");
      t.appendChild(tableRow(B.columns.map((c) => c.replace(/_us$/, " (us)").replace(/_pct$/, " (%)").replace(/_/g, " ")), numeric, "th"));
      for (const r of B.rows) t.appendChild(tableRow(r.map((c) => (c === null ? "-" : String(c))), numeric));
    }
    if (D.plot && /^[A-Za-z0-9+/=]+$/.test(D.plot)) {
      const img = el("img");
      img.alt = "copyhunt bench moe plot: time saved and speedup against tokens";
      img.src = "data:image/png;base64," + D.plot;
      $("plot").appendChild(img);
    }
  }

  function renderControls() {
    const box = $("metric");
    for (const [k, label] of Object.entries(METRICS)) {
      if (k === "t" && !D.timed) continue;
      const lab = el("label"), input = el("input");
      input.type = "radio"; input.name = "metric"; input.value = k; input.checked = k === state.metric;
      input.addEventListener("change", () => { state.metric = k; renderTree(); });
      lab.append(input, " " + label);
      box.appendChild(lab);
    }
    $("hide-torch").checked = state.hideTorch;
    $("hide-torch").addEventListener("change", (e) => { state.hideTorch = e.target.checked; renderTree(); });
    $("expand-all").addEventListener("click", () => { (function all(n) { for (const k of kidsOf(n)) { setOpen(k, true); all(k); } })(state.tree.root); });
    $("collapse-all").addEventListener("click", () => { for (const n of state.tree.nodes) if (n.row && n.open) setOpen(n, false); });
    $("flame-reset").addEventListener("click", () => { state.flameRoot = null; renderFlame(); });
    $("footer").textContent = "copyhunt HTML report: one file, no network. " + plural(ST.length, "call stack entry", "call stack entries") + " from " + plural(D.totals.copies, "copy", "copies") + ".";
  }

  if (D.totals.bytes === 0) state.metric = "n"; // nothing moved bytes (noops, or a file without sizes)
  renderMeta();
  renderSummary();
  renderControls();
  renderTree();
  renderSites();
  renderBench();
  const renderMs = performance.now() - t0;

  // --- #selftest: click through the page and write what happened into <pre id="selftest"> ---
  function selftest() {
    const out = { ok: true, checks: {}, errors, render_ms: renderMs };
    let last = performance.now();
    out.ms = {};
    const check = (name, cond, detail) => {
      out.checks[name] = { ok: !!cond, detail: detail === undefined ? null : detail };
      if (!cond) out.ok = false;
      out.ms[name] = Math.round(performance.now() - last);
      last = performance.now();
    };
    const visible = () => [...document.querySelectorAll("#tree .row")].filter((r) => r.offsetParent !== null);
    const rowText = (r) => [...r.querySelectorAll(".fn, .loc, .tag")].map((x) => x.textContent).join(" ");
    const badFmt = D.fmt_check.filter(([n, s]) => fmtBytes(n) !== s).map(([n, s]) => [n, s, fmtBytes(n)]);
    check("fmt_bytes", badFmt.length === 0, badFmt);
    out.default_rows = visible().map(rowText);
    out.default_sites = visible().filter((r) => r.classList.contains("is-site")).map((r) => r.querySelector(".loc").textContent);
    // Sites a reader sees without scrolling (what a screenshot of the first view shows).
    out.sites_in_view = visible().filter((r) => r.classList.contains("is-site") && r.getBoundingClientRect().bottom <= window.innerHeight)
      .map((r) => r.querySelector(".loc").textContent);
    out.nodes = state.tree.nodes.length - 1;
    const root = state.tree.root, tops = kidsOf(root);
    $("collapse-all").click();
    check("collapse_all", visible().length === tops.length, visible().length);
    if (tops.length) {
      const first = tops[0];
      first.tw.click();
      const want = first.kind === "copy" ? tops.length : tops.length + first.kids.size;
      check("expand_one", first.open && first.row.getAttribute("aria-expanded") === "true" && visible().length === want, [visible().length, want]);
      first.row.click();
      check("collapse_one", !first.open && visible().length === tops.length, visible().length);
    }
    $("expand-all").click();
    const rows = visible().length, panels = [...document.querySelectorAll("#tree .details")].filter((d) => d.offsetParent !== null).length;
    const leaves = state.tree.nodes.filter((n) => n.kind === "copy").length;
    check("expand_all", rows === out.nodes && panels === leaves, [rows, out.nodes, panels, leaves]);
    out.expanded_text = $("tree").textContent.length;
    const blocks = document.querySelectorAll("#flame .blk");
    check("flame_drawn", blocks.length > 0 || val(root) === 0, blocks.length);
    if (blocks.length) {
      blocks[blocks.length - 1].click();
      check("flame_reveals", !!state.selected && state.selected.row.offsetParent !== null && state.selected.row.classList.contains("selected"), null);
    }
    const torchFrames = FR.some((f) => f[3]);
    $("hide-torch").click();
    const withTorch = state.tree.nodes.length - 1;
    check("show_torch", torchFrames ? withTorch > out.nodes : withTorch === out.nodes, [withTorch, out.nodes]);
    $("hide-torch").click();
    for (const input of document.querySelectorAll("#metric input")) { input.click(); }
    document.querySelector("#metric input").click(); // back to the first measure
    check("metrics", state.tree.nodes.length - 1 === out.nodes, state.metric);
    out.sites_rows = $("sites").rows.length;
    out.page_text = document.body.innerText.length;
    check("no_errors", errors.length === 0, errors);
    // Leave the page as a reader first sees it (the screenshot is taken after this).
    state.metric = D.totals.bytes === 0 ? "n" : "b";
    document.querySelector("#metric input[value='" + state.metric + "']").checked = true;
    renderTree();
    window.scrollTo(0, 0);
    out.selftest_ms = performance.now() - t0 - renderMs;
    $("selftest").textContent = JSON.stringify(out);
  }
  if (location.hash === "#selftest") selftest();
})();
