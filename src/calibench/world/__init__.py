"""calibench.world"""
