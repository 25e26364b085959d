"""The shared path every file takes after its source has found it: claim, sniff, process, finish."""
