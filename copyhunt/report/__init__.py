"""copyhunt.report"""
