"""calibench.models"""
