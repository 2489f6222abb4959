"""Apps that solve inverse problems with the shipped priors: restoration (``restore``),
non-differentiable measurements (``blackbox``), unknown operators (``blind``), batched
sampling across processes (``distributed``) and arm poses (``kinematics``)."""
