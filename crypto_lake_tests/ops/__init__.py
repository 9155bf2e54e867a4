"""Tests of alerts and collector health (issue 18)."""
