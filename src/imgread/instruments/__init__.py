"""What a trial measures about itself: the page cache's state, memory, page faults, the
machine's noise, and the device's ceilings."""
