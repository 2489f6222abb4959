"""Training the shipped priors and classifiers (``train``) and scoring them
(``evaluate_priors``)."""
