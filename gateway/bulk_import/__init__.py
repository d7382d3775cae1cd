"""`gateway import FILE`: stream an NDJSON or CSV file of profiles into a running gateway.

readers.py and csv_mapping.py turn the file into rows, chunks.py validates them
and groups them into batch bodies, client.py posts each with its own
idempotency key, checkpoint.py remembers the acknowledged prefix so a run can
resume, send_loop.py sends chunks concurrently and settles them in order,
errors_file.py keeps the rejected rows, progress.py draws the bar, runner.py
starts or resumes a run and reports it, cli.py is the argparse front.
"""
