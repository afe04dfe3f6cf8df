"""The ICBHI 2017 cycle classes, named once for every step (manifest, metrics, models, reports).

Label ``k`` of a cycle is ``ICBHI_CLASS_NAMES[k]``: 0 normal, 1 crackle only, 2 wheeze only,
3 both (:func:`lungpipe.data.annotations.cycle_label` turns the crackle/wheeze flags into it).
"""

ICBHI_CLASS_NAMES: tuple[str, ...] = ("normal", "crackle", "wheeze", "both")
