"""calibench.tasks"""
