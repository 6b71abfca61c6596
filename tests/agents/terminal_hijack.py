"""Prints what would take over an operator's terminal if copied to it raw: set the clipboard
(OSC 52), retitle the window, clear the screen, an 8-bit CSI; then a plain last line."""
import sys

sys.stdout.write("before\n\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b]0;root@prod\x07\x1b[2J\x9b31mafter\n")
sys.stdout.flush()
