"""dlib's 68-point face layout (iBUG 300-W), each feature's points named once.

Ranges are 0-based and end-exclusive, as Python's; ``points[RIGHT_EYE]`` needs a list index
(``points[list(RIGHT_EYE)]``) or the equivalent slice. "Right" is the subject's right, on the
viewer's left.
"""

JAW = range(0, 17)
RIGHT_BROW = range(17, 22)
LEFT_BROW = range(22, 27)
BROWS = range(17, 27)
NOSE = range(27, 36)  # bridge 27-30, nostrils 31-35
NOSE_TIP = 30
NOSTRILS = range(31, 36)
RIGHT_EYE = range(36, 42)
LEFT_EYE = range(42, 48)
OUTER_LIPS = range(48, 60)
INNER_LIPS = range(60, 68)
MOUTH = range(48, 68)
