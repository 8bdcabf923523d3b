"""Figures of a study, drawn with seaborn from the tidy tables (:mod:`.draw`), and the helpers
every phase's figures share (:mod:`.common`, :mod:`.memory`, :mod:`.storage`, :mod:`.datasets`).
Each phase's own figures live in its folder (``phases/<phase>/figures.py``)."""
