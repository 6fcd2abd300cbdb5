"""copyhunt.gate"""
