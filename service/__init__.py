"""Rolegate: an authorization decision service built on Casbin.

The HTTP app factory is `rolegate.api.create_app`; the decision engine is `rolegate.engine`.
"""
