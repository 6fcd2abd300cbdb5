"""copyhunt.moe"""
