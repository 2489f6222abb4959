"""Apps of guided generation: conditional guidance sweeps (``conditional``), attention
maps (``attention``) and texture synthesis at any size (``synthesize``)."""
