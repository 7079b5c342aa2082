"""Tests of the recsys package."""
