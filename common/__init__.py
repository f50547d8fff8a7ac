"""Framework-neutral AlexNet: every well-known variant as data, its geometry, init rules and a float64
reference forward and backward. Imports numpy only."""
from .geometry import adaptive_bins, adaptive_pool_is_uniform, adaptive_pool_matrix, resolve_1d
from .layout import (activation_from_nchw, activation_to_nchw, canonical_shape, conv_hwio_to_oihw,
                     conv_oihw_to_hwio, fc_rows_chw_to_hwc, fc_rows_hwc_to_chw, from_nhwc, nchw_to_nhwc, nhwc_flatten_chw, to_nhwc)
from .init import init_bounds, init_weights, truncated_normal_std
from .layers import (LRN, AdaptiveAvgPool, Conv, Dense, Dropout, Flatten, Init, Layer, MaxPool, ReLU)
from .reference import reference_forward
from .backward import (NEAR_TIE_RTOL, Gradients, NearTies, Routing, find_near_ties, gradient_errors, layer_at_fault,
                       output_cotangent, reference_backward, routing_from_activations)
from .spec import Spec, get_spec, input_sizes_for, smallest_input_size
from .variants import VARIANTS, Case, MeanImage, Preprocessing, Variant

__all__ = ["VARIANTS", "Variant", "Case", "Preprocessing", "MeanImage", "Spec", "get_spec", "smallest_input_size", "input_sizes_for", "init_weights",
           "init_bounds", "truncated_normal_std", "reference_forward", "Init", "Layer", "Conv", "ReLU", "LRN",
           "MaxPool", "AdaptiveAvgPool", "Flatten", "Dropout", "Dense", "resolve_1d", "adaptive_bins",
           "adaptive_pool_matrix", "adaptive_pool_is_uniform", "fc_rows_chw_to_hwc", "fc_rows_hwc_to_chw",
           "conv_oihw_to_hwio", "conv_hwio_to_oihw", "nchw_to_nhwc", "activation_to_nchw", "activation_from_nchw",
           "reference_backward", "Gradients", "output_cotangent", "find_near_ties", "NearTies", "NEAR_TIE_RTOL",
           "Routing", "routing_from_activations", "gradient_errors", "layer_at_fault",
           "to_nhwc", "from_nhwc", "nhwc_flatten_chw", "canonical_shape"]
