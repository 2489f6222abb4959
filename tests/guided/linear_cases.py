"""Shared pieces of the exact-posterior tests of guidance terms: linear operators (with and
without an SVD) on flat vectors and on small images, a flat prior seen as images, the matrix
of an operator, Gaussian priors whose posteriors are exact, a linear-Gaussian problem on
them and the whitened covariance of samples."""

import torch

import operators
import priors

F64 = torch.float64


class Dense(operators.LinearOperator):
    """A dense matrix with only apply/adjoint: exercises the conjugate-gradient path."""

    def __init__(self, a):
        super().__init__((a.shape[1],), (a.shape[0],))
        self.register_buffer("a", a)

    def apply(self, x):
        return x @ self.a.T

    def apply_adjoint(self, y):
        return y @ self.a


class Flat(priors.Denoiser):
    """A flat (B, D) prior seen on images of shape `shape`."""

    counts_evaluations = False  # the wrapped prior counts

    def __init__(self, prior, shape):
        super().__init__(prior.schedule)
        self.prior, self.shape = prior, shape

    def forward(self, x_t, t):
        return self.prior(x_t.flatten(1), t).view_as(x_t)


def matrix_of(op, d):
    """The matrix of a linear operator on ``d`` inputs, read off the unit vectors."""
    return op(torch.eye(d, dtype=F64).reshape(d, *op.in_shape)).reshape(d, -1).T


def gaussian(d, seed=0, correlated=True):
    """N(mu, C) on the cosine schedule: C a random dense covariance, or a diagonal one."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g, dtype=F64)
    if correlated:
        root = torch.randn(d, d, generator=g, dtype=F64) / d**0.5
        covariance = root @ root.T + 0.1 * torch.eye(d, dtype=F64)
    else:
        covariance = torch.diag(0.2 + torch.rand(d, generator=g, dtype=F64))
    return priors.GaussianMixture(
        torch.ones(1, dtype=F64), mean[None], covariance[None], priors.CosineSchedule()
    )


def flow_gaussian(d, seed=3):
    """N(m, I) on the rectified schedule (m standard normal) and its exact velocity field as a
    flow prior (priors.FlowDenoiser): the mixture, for exact posteriors, and the denoiser."""
    mean = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    rectified = priors.RectifiedSchedule()
    prior = priors.GaussianMixture(torch.ones(1), mean[None], torch.eye(d)[None], rectified)
    return prior, priors.FlowDenoiser(prior.velocity, rectified, prior.shape)


def inpainted(prior, sigma_y=0.1, seed=4):
    """The inpainting case's operator and a noisy masked measurement of a draw of ``prior``."""
    op, d = CASES["inpainting"]
    g = torch.Generator().manual_seed(seed)
    y = (prior.sample(1, g) + sigma_y * torch.randn(1, d, generator=g, dtype=F64)) * op.mask
    return op, y


def measured(sigma_y=0.1, seed=0, d=8):
    """A linear-Gaussian problem with an exact posterior: the prior :func:`gaussian`, a 3 x d
    standard normal matrix A and y = A x + sigma_y eps for a prior draw x. Returns (prior,
    MatrixOperator(A), y of shape (1, 3), sigma_y)."""
    prior = gaussian(d, seed=seed)
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(3, d, generator=g, dtype=F64)
    y = prior.sample(1, g) @ a.T + sigma_y * torch.randn(1, 3, generator=g, dtype=F64)
    return prior, operators.MatrixOperator(a), y, sigma_y


def whitened(samples, cov):
    """Eigenvalues of C^{-1/2} S C^{-1/2} for the samples' covariance S (all 1 when exact)."""
    root = torch.linalg.cholesky(cov)
    inner = torch.linalg.solve_triangular(root, torch.cov(samples.T), upper=False)
    return torch.linalg.eigvalsh(torch.linalg.solve_triangular(root, inner.T, upper=False))


def _cases():
    g = torch.Generator().manual_seed(1)
    wide = torch.randn(3, 6, generator=g, dtype=F64)
    mask = torch.tensor([1.0, 0, 1, 1, 0, 1], dtype=F64)
    blur = operators.CircularBlur(operators.gaussian_kernel(0.7, size=3), (1, 4, 4))
    return {
        "matrix": (operators.MatrixOperator(wide), 6),
        "inpainting": (operators.Inpainting(mask), 6),
        "dense_cg": (Dense(wide), 6),
        "circular_blur": (blur, 16),
    }


#: name -> (operator, input dimension).
CASES = _cases()


class LinearAutoencoder(priors.Autoencoder):
    """D(z) = W z + b and E(x) = W^+ (x - b) on flat vectors: with orthonormal columns of W the
    encoder inverts the decoder on its range, and a Gaussian latent prior makes the decoded
    images Gaussian, so latent methods meet exact posteriors."""

    def __init__(self, w, b=None):
        super().__init__((w.shape[0],), (w.shape[1],))
        self.register_buffer("w", w)
        self.register_buffer("b", torch.zeros(w.shape[0], dtype=w.dtype) if b is None else b)

    def apply_encoder(self, x):
        return (x - self.b) @ torch.linalg.pinv(self.w).T

    def apply_decoder(self, z):
        return z @ self.w.T + self.b


def rotation(d, seed=7):
    """A random d x d orthogonal matrix."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    return q


def rotated(prior, w):
    """The Gaussian mixture of W x for x ~ ``prior`` (W orthogonal): the pixel prior of a
    latent prior decoded by :class:`LinearAutoencoder` (W)."""
    return priors.GaussianMixture(
        prior.weights, prior.means @ w.T, w @ prior.covs @ w.T, prior.schedule
    )
