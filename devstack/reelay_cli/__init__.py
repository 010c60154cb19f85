"""reelay_cli"""
