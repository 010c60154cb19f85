"""reelay_local"""
