"""calibench.study"""
