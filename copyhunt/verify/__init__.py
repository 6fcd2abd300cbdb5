"""Proof by re-execution (``copyhunt verify``): re-run a program with each site's eliminable copies elided
the way the verdict says, and compare the program's results with an untouched run, bit for bit."""

from copyhunt.verify.run import VerifyResult, SiteResult, verify, warm_and_trace

__all__ = ["verify", "warm_and_trace", "VerifyResult", "SiteResult"]
