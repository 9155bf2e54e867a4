"""Operations: alerts to a webhook and the conditions that raise them (no Dagster import)."""
