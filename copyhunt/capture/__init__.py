"""copyhunt.capture"""
