"""calibench.train"""
