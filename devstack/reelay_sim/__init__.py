"""reelay_sim"""
