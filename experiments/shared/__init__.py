"""What the apps share: run folders and atomic writes (:mod:`.runs`), the data sets
(:mod:`.data`), metrics, timing, building objects from configs (:mod:`.build`), the image
tasks (:mod:`.tasks`), the deepinv peers (:mod:`.peers`) and progress reporting
(:mod:`.report`). No module here imports an app."""
