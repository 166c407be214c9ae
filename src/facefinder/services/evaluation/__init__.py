"""How accurate the models are on photos the operator holds: `facefinder evaluate`.

Thresholds and false match rates were measured on LFW, and they shift on other people and other
cameras; this package measures them on labelled photos the operator holds (verification, 1:N search,
false match rates by demographic group), writes a report, and can store the result as the calibration
that search then uses for this model (services/calibration.py).

``metrics`` holds the computations (pure numpy, shared with benchmarks/accuracy.py), ``run`` embeds a
labelled folder and puts the figures together, ``demographics`` reads UTKFace-named photos and measures
false match rates by group, ``report`` writes the HTML report with its pictures.
"""
