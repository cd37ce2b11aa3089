"""The fused extremes / penalty-gradient kernels against hand-worked values."""

import numpy as np
import pytest

from jumpstart.train.stacks import kernels

# one member, one row position, 3 points x 3 units; unit 2 is padding (width 2),
# filled with 9 here to show that point extremes ignore it
G = np.array([[[[2, 5, 9], [2, 1, 9], [0, 5, 9]]]], dtype=np.float32)  # (P, R, N, W)
WIDTHS = np.array([2])
# the kernels' feature-major layout (P, W, R * N)
G_T = np.ascontiguousarray(G.transpose(0, 3, 1, 2).reshape(1, 3, 3))


def extremes():
    u_val, u_idx = np.zeros((2, 1, 1, 1, 3), np.float32), np.zeros((2, 1, 1, 1, 3), np.int64)
    p_val, p_idx = np.zeros((2, 1, 1, 3), np.float32), np.zeros((2, 1, 1, 3), np.int64)
    kernels.layer_extremes(G_T, WIDTHS, 0, 1, u_val, u_idx, p_val, p_idx)
    return u_val, u_idx, p_val, p_idx


def test_layer_extremes_by_hand():
    u_val, u_idx, p_val, p_idx = extremes()
    # unit max over points: unit 0 ties at points 0 and 1 (first wins), unit 1 at 0 and 2
    assert u_val[0, 0, 0, 0].tolist() == [2, 5, 0] and u_idx[0, 0, 0, 0].tolist() == [0, 0, 0]
    assert u_val[1, 0, 0, 0].tolist() == [0, 1, 0] and u_idx[1, 0, 0, 0].tolist() == [2, 1, 0]
    # point max/min over the 2 real units
    assert p_val[0, 0, 0].tolist() == [5, 2, 5] and p_idx[0, 0, 0].tolist() == [1, 0, 1]
    assert p_val[1, 0, 0].tolist() == [2, 1, 0] and p_idx[1, 0, 0].tolist() == [0, 1, 0]


@pytest.mark.parametrize("average, expected", [
    # unit max 1, 2; unit min 10, 20; point max 100, 200, 300; point min 1000, 2000, 3000
    (False, [[1001, 102], [200, 2020], [3010, 300]]),
    (True, [[1000.5, 101], [200.5, 2020], [3010, 301]]),  # unit max split over its ties
])
def test_penalty_gradient_by_hand(average, expected):
    u_val, u_idx, p_val, p_idx = extremes()
    u_coef = np.array([[1, 2, 0], [10, 20, 0]], np.float32).reshape(2, 1, 1, 3)
    p_coef = np.array([[100, 200, 300], [1000, 2000, 3000]], np.float32).reshape(2, 1, 1, 3)
    dg_t = np.zeros_like(G_T)
    kernels.add_penalty_grad(dg_t, G_T, average, WIDTHS, 0, 1, u_val, u_idx, u_coef, p_val,
                             p_idx, p_coef)
    dg = dg_t.reshape(1, 3, 1, 3).transpose(0, 2, 3, 1)  # back to (P, R, N, W)
    assert dg[0, 0, :, :2].tolist() == expected
    assert dg[0, 0, :, 2].tolist() == [0, 0, 0]  # padding gets nothing
