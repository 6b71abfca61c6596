"""An agent with a native-code bug: it segfaults after a moment."""
import ctypes
import time

time.sleep(0.5)
print("dereferencing NULL", flush=True)
ctypes.string_at(0)
