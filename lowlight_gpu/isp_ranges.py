"""The ranges the ISP parameters of a physics pair are drawn from (Brooks et al. 2019, "Unprocessing Images for
Learned Raw Denoising", google-research/unprocessing ``unprocess.py``, Apache-2.0: random_ccm, random_gains).

params.sample_isp draws from them; synth/physics.py applies what was drawn (the pair's ``ccm`` and gains).
"""

# Brooks et al. random_ccm(): XYZ -> camera matrices of four cameras, and sRGB -> XYZ (D65).
XYZ2CAMS = (((1.0234, -0.2969, -0.2266), (-0.5625, 1.6328, -0.0469), (-0.0703, 0.2188, 0.6406)),
            ((0.4913, -0.0541, -0.0202), (-0.613, 1.3513, 0.2906), (-0.1564, 0.2151, 0.7183)),
            ((0.838, -0.263, -0.0639), (-0.2887, 1.0725, 0.2496), (-0.0627, 0.1427, 0.5438)),
            ((0.6596, -0.2079, -0.0562), (-0.4782, 1.3016, 0.1933), (-0.097, 0.1581, 0.5181)))
RGB2XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750), (0.0193339, 0.1191920, 0.9503041))
CCM_WEIGHTS = (1e-8, 1e8)      # each camera's weight ~ U(1e-8, 1e8)
RGB_GAIN_MEAN_SD = (0.8, 0.1)  # brightness gain = 1 / N(0.8, 0.1)
RGB_GAIN_FLOOR = 0.1           # our guard: the normal draw is clamped to >= 0.1 (Brooks has none)
RED_GAIN = (1.9, 2.4)
BLUE_GAIN = (1.5, 1.9)


def rgb2cam_from_weights(weights):
    """Brooks' random_ccm for given weights: the weighted XYZ->camera mean times sRGB->XYZ, rows summing to 1."""
    total = ((weights[0] + weights[1]) + weights[2]) + weights[3]
    xyz2cam = [[(((XYZ2CAMS[0][i][j] * weights[0] + XYZ2CAMS[1][i][j] * weights[1]) + XYZ2CAMS[2][i][j] * weights[2])
                 + XYZ2CAMS[3][i][j] * weights[3]) / total for j in range(3)] for i in range(3)]
    out = []
    for i in range(3):
        row = [(xyz2cam[i][0] * RGB2XYZ[0][j] + xyz2cam[i][1] * RGB2XYZ[1][j]) + xyz2cam[i][2] * RGB2XYZ[2][j]
               for j in range(3)]
        s = (row[0] + row[1]) + row[2]
        out.append([v / s for v in row])
    return out
