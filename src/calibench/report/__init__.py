"""calibench.report"""
