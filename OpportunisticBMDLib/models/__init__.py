"""Segmentation and vertebra-keypoint models: synthesis of training data, training, shipping, inference.

The network segments side-agnostic anatomy classes (:mod:`.classes`); levels are named from anatomy
(:mod:`.naming`) and left/right from the midline, then mapped to the library schema (:mod:`..labels`).
"""
