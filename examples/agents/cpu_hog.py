"""An agent stuck in an infinite loop."""
print("spinning forever", flush=True)
while True:
    pass
