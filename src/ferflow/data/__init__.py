"""Data: ingest (folder, zip, csv), synthetic faces, splits and the canonical dataset."""
