"""calibench.metrics"""
