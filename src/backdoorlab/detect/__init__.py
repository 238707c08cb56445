"""Input detectors (``backdoorlab detect``): flag the prompts that carry a trigger, without
knowing it, and name the words to blame. Each file registers one detector."""
