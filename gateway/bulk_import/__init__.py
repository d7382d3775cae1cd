"""`gateway import FILE`: stream an NDJSON or CSV file of profiles into a running gateway.

readers.py and csv_mapping.py turn the file into rows, chunks.py validates them
and groups them into batch bodies, client.py posts each with its own
idempotency key, checkpoint.py remembers the acknowledged prefix so a run can
resume, progress.py draws the bar, runner.py ties them together, cli.py is the
argparse front.
"""
