"""Field-number tables of Caffe's messages, in both dialects, written out by hand.

Caffe describes its files with ``caffe.proto``. Instead of compiling it, this
module lists the parts of it that DeepLab needs, as data: for each message, its
fields (name, number, kind, repeated or not); for each enum, its values.

Three versions of ``caffe.proto`` matter, and their numbers differ:

* **new dialect** (BVLC Caffe after 2015 and DeepLab v2, "dl2"): ``NetParameter.layer``
  (field 100) holds :data:`LayerParameter` with a string ``type``. DeepLab v2 gave
  the numbers 143-148 to its own parameter messages (``interp_param`` = 143, ...),
  which BVLC later gave to others (``input_param`` = 143, ...). These fields carry
  a set of layer ``types``: the decoder picks the meaning matching the layer's type.
* **V1 dialect** (Caffe before 2015 and DeepLab v1, "dl1"): ``NetParameter.layers``
  (field 2) holds ``V1LayerParameter`` with an enum ``type``. DeepLab v1 added enum
  values (``IMAGE_SEG_DATA`` = 39, the number BVLC later gave to ``DECONVOLUTION``;
  ``INTERP`` = 41, ...), parameter fields 42-59 (field 42 is BVLC's ``loss_param``
  but DeepLab's ``seg_accuracy_param``) and ``hole`` = 17 in its
  ``ConvolutionParameter`` (BVLC: 17 = ``force_nd_im2col``, 18 = ``dilation``).
  V1 files were written before BVLC had dilation, so V1 layers are decoded with
  DeepLab v1's ``ConvolutionParameter`` (message ``V1ConvolutionParameter`` here).

A field whose ``number`` is ``None`` is known by name only (it appears in the
released text files, but its binary number is not documented): the text
parser accepts it, the binary decoder skips it.

References
----------
BVLC/caffe ``src/caffe/proto/caffe.proto``; DeepLab v1 (deeplab-public) and v2
(deeplab-public-ver2) ``src/caffe/proto/caffe.proto``, as summarised in the
project's FACTS section (e).
"""
from typing import NamedTuple

#: Scalar kinds and the protobuf wire type each is written with.
WIRE_VARINT, WIRE_FIXED64, WIRE_LEN, WIRE_FIXED32 = 0, 1, 2, 5
SCALAR_WIRE = {
    "int32": WIRE_VARINT, "int64": WIRE_VARINT, "uint32": WIRE_VARINT, "uint64": WIRE_VARINT,
    "bool": WIRE_VARINT, "float": WIRE_FIXED32, "double": WIRE_FIXED64,
    "string": WIRE_LEN, "bytes": WIRE_LEN,
}


class Field(NamedTuple):
    """One field of a message.

    ``kind`` is a scalar kind (a key of :data:`SCALAR_WIRE`), an enum name (a key
    of :data:`ENUMS`) or a message name (a key of :data:`MESSAGES`). ``types``,
    for LayerParameter fields only, limits the field to layers of these types.
    ``array``: a repeated float/double decoded to a NumPy array (blob data).
    """
    name: str
    number: int | None
    kind: str
    repeated: bool = False
    types: frozenset | None = None
    array: bool = False


class Message:
    """A message schema: its fields by name and by number."""

    def __init__(self, name, fields):
        self.name = name
        self.fields = tuple(fields)
        self.by_name = {f.name: f for f in self.fields}
        self.by_number = {}
        for f in self.fields:
            if f.number is not None:
                self.by_number.setdefault(f.number, []).append(f)
        if len(self.by_name) != len(self.fields):
            raise AssertionError(f"{name}: duplicate field names")

    def field_for(self, number, layer_type=None):
        """The field numbered ``number`` for a layer of type ``layer_type`` (None if unknown)."""
        candidates = self.by_number.get(number, ())
        for f in candidates:
            if f.types is not None and layer_type in f.types:
                return f
        for f in candidates:
            if f.types is None:
                return f
        return None


R = True  # repeated

ENUMS = {
    "Phase": {"TRAIN": 0, "TEST": 1},
    "DimCheckMode": {"STRICT": 0, "PERMISSIVE": 1},
    "VarianceNorm": {"FAN_IN": 0, "FAN_OUT": 1, "AVERAGE": 2},
    "Engine": {"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2},
    "PoolMethod": {"MAX": 0, "AVE": 1, "STOCHASTIC": 2},
    "RoundMode": {"CEIL": 0, "FLOOR": 1},
    "EltwiseOp": {"PROD": 0, "SUM": 1, "MAX": 2},
    "NormalizationMode": {"FULL": 0, "VALID": 1, "BATCH_SIZE": 2, "NONE": 3},
    "NormRegion": {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1},
    "DB": {"LEVELDB": 0, "LMDB": 1},
    "LabelType": {"NONE": 0, "IMAGE": 1, "PIXEL": 2},
    "SegAccuracyMetric": {"PixelAccuracy": 0, "ClassAccuracy": 1, "PixelIOU": 2},
    # V1LayerParameter.LayerType: BVLC values 0-39, DeepLab v1 values 39-56. The
    # number 39 means DECONVOLUTION in BVLC and IMAGE_SEG_DATA in DeepLab v1; the
    # decoder tells them apart by the layer's content (see caffemodel.py).
    "V1LayerType": {
        "NONE": 0, "ACCURACY": 1, "BNLL": 2, "CONCAT": 3, "CONVOLUTION": 4, "DATA": 5,
        "DROPOUT": 6, "EUCLIDEAN_LOSS": 7, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10,
        "IM2COL": 11, "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15,
        "MULTINOMIAL_LOGISTIC_LOSS": 16, "POOLING": 17, "RELU": 18, "SIGMOID": 19,
        "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22, "TANH": 23, "WINDOW_DATA": 24,
        "ELTWISE": 25, "POWER": 26, "SIGMOID_CROSS_ENTROPY_LOSS": 27, "HINGE_LOSS": 28,
        "MEMORY_DATA": 29, "ARGMAX": 30, "THRESHOLD": 31, "DUMMY_DATA": 32, "SLICE": 33,
        "MVN": 34, "ABSVAL": 35, "SILENCE": 36, "CONTRASTIVE_LOSS": 37, "EXP": 38,
        "DECONVOLUTION": 39,
        "IMAGE_SEG_DATA": 39, "SEG_ACCURACY": 40, "INTERP": 41, "PADDING": 42,
        "MAT_WRITE": 43, "MAT_READ": 44, "DENSE_CRF": 45, "DOMINANT_CHANNEL": 46,
        "BIAS_CHANNEL": 47, "UNIQUE_LABEL": 48, "CENSOR_LABEL": 49,
        "ADAPTIVE_BIAS_CHANNEL": 50, "CHANNEL_AGGREGATOR": 51, "IGNORE_OVERLAY": 52,
        "HISTOGRAM": 53, "RELATIVE_ERROR": 54, "GAIN_CHANNEL": 55, "ONEHOT": 56,
    },
}

#: V1 enum type name -> new-dialect type string (BVLC's UpgradeV1LayerType, plus DeepLab v1's).
V1_TO_NEW_TYPE = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
    "IMAGE_SEG_DATA": "ImageSegData", "SEG_ACCURACY": "SegAccuracy", "INTERP": "Interp",
    "PADDING": "Padding", "MAT_WRITE": "MatWrite", "MAT_READ": "MatRead", "DENSE_CRF": "DenseCRF",
    "DOMINANT_CHANNEL": "DominantChannel", "BIAS_CHANNEL": "BiasChannel",
    "UNIQUE_LABEL": "UniqueLabel", "CENSOR_LABEL": "CensorLabel",
    "ADAPTIVE_BIAS_CHANNEL": "AdaptiveBiasChannel", "CHANNEL_AGGREGATOR": "ChannelAggregator",
    "IGNORE_OVERLAY": "IgnoreOverlay", "HISTOGRAM": "Histogram", "RELATIVE_ERROR": "RelativeError",
    "GAIN_CHANNEL": "GainChannel", "ONEHOT": "OneHot",
}
NEW_TO_V1_TYPE = {new: old for old, new in V1_TO_NEW_TYPE.items()}

_FILLER = "FillerParameter"

_MESSAGE_LIST = [
    Message("BlobShape", [Field("dim", 1, "int64", R)]),
    Message("BlobProto", [
        Field("num", 1, "int32"), Field("channels", 2, "int32"), Field("height", 3, "int32"),
        Field("width", 4, "int32"),
        Field("data", 5, "float", R, array=True), Field("diff", 6, "float", R, array=True),
        Field("shape", 7, "BlobShape"),
        Field("double_data", 8, "double", R, array=True),
        Field("double_diff", 9, "double", R, array=True),
    ]),
    Message("NetState", [Field("phase", 1, "Phase"), Field("level", 2, "int32"),
                         Field("stage", 3, "string", R)]),
    Message("NetStateRule", [
        Field("phase", 1, "Phase"), Field("min_level", 2, "int32"), Field("max_level", 3, "int32"),
        Field("stage", 4, "string", R), Field("not_stage", 5, "string", R),
    ]),
    Message("ParamSpec", [
        Field("name", 1, "string"), Field("share_mode", 2, "DimCheckMode"),
        Field("lr_mult", 3, "float"), Field("decay_mult", 4, "float"),
    ]),
    Message(_FILLER, [
        Field("type", 1, "string"), Field("value", 2, "float"), Field("min", 3, "float"),
        Field("max", 4, "float"), Field("mean", 5, "float"), Field("std", 6, "float"),
        Field("sparse", 7, "int32"), Field("variance_norm", 8, "VarianceNorm"),
    ]),
    Message("TransformationParameter", [
        Field("scale", 1, "float"), Field("mirror", 2, "bool"), Field("crop_size", 3, "uint32"),
        Field("mean_file", 4, "string"), Field("mean_value", 5, "float", R),
        Field("force_color", 6, "bool"), Field("force_gray", 7, "bool"),
        Field("scale_factors", 8, "float", R), Field("crop_width", 9, "uint32"),
        Field("crop_height", 10, "uint32"),
    ]),
    Message("LossParameter", [
        Field("ignore_label", 1, "int32"), Field("normalize", 2, "bool"),
        Field("normalization", 3, "NormalizationMode"),
    ]),
    Message("AccuracyParameter", [Field("top_k", 1, "uint32"), Field("axis", 2, "int32"),
                                  Field("ignore_label", 3, "int32")]),
    Message("ArgMaxParameter", [Field("out_max_val", 1, "bool"), Field("top_k", 2, "uint32"),
                                Field("axis", 3, "int32")]),
    Message("ConcatParameter", [Field("concat_dim", 1, "uint32"), Field("axis", 2, "int32")]),
    Message("BatchNormParameter", [
        Field("use_global_stats", 1, "bool"), Field("moving_average_fraction", 2, "float"),
        Field("eps", 3, "float"), Field("update_global_stats", 4, "bool"),
    ]),
    Message("BiasParameter", [Field("axis", 1, "int32"), Field("num_axes", 2, "int32"),
                              Field("filler", 3, _FILLER)]),
    # New dialect (BVLC and DeepLab v2): pad/kernel_size/stride/dilation are repeated.
    Message("ConvolutionParameter", [
        Field("num_output", 1, "uint32"), Field("bias_term", 2, "bool"),
        Field("pad", 3, "uint32", R), Field("kernel_size", 4, "uint32", R),
        Field("group", 5, "uint32"), Field("stride", 6, "uint32", R),
        Field("weight_filler", 7, _FILLER), Field("bias_filler", 8, _FILLER),
        Field("pad_h", 9, "uint32"), Field("pad_w", 10, "uint32"),
        Field("kernel_h", 11, "uint32"), Field("kernel_w", 12, "uint32"),
        Field("stride_h", 13, "uint32"), Field("stride_w", 14, "uint32"),
        Field("engine", 15, "Engine"), Field("axis", 16, "int32"),
        Field("force_nd_im2col", 17, "bool"), Field("dilation", 18, "uint32", R),
    ]),
    # DeepLab v1 (V1 layers): scalar pad/kernel_size/stride and hole = 17..19.
    Message("V1ConvolutionParameter", [
        Field("num_output", 1, "uint32"), Field("bias_term", 2, "bool"),
        Field("pad", 3, "uint32"), Field("kernel_size", 4, "uint32"),
        Field("group", 5, "uint32"), Field("stride", 6, "uint32"),
        Field("weight_filler", 7, _FILLER), Field("bias_filler", 8, _FILLER),
        Field("pad_h", 9, "uint32"), Field("pad_w", 10, "uint32"),
        Field("kernel_h", 11, "uint32"), Field("kernel_w", 12, "uint32"),
        Field("stride_h", 13, "uint32"), Field("stride_w", 14, "uint32"),
        Field("engine", 15, "Engine"),
        Field("hole", 17, "uint32"), Field("hole_h", 18, "uint32"), Field("hole_w", 19, "uint32"),
    ]),
    Message("DataParameter", [
        Field("source", 1, "string"), Field("scale", 2, "float"), Field("mean_file", 3, "string"),
        Field("batch_size", 4, "uint32"), Field("crop_size", 5, "uint32"), Field("mirror", 6, "bool"),
        Field("rand_skip", 7, "uint32"), Field("backend", 8, "DB"),
        Field("force_encoded_color", 9, "bool"), Field("prefetch", 10, "uint32"),
    ]),
    Message("DropoutParameter", [Field("dropout_ratio", 1, "float")]),
    Message("EltwiseParameter", [Field("operation", 1, "EltwiseOp"), Field("coeff", 2, "float", R),
                                 Field("stable_prod_grad", 3, "bool")]),
    Message("ImageDataParameter", [
        Field("source", 1, "string"), Field("scale", 2, "float"), Field("mean_file", 3, "string"),
        Field("batch_size", 4, "uint32"), Field("crop_size", 5, "uint32"), Field("mirror", 6, "bool"),
        Field("rand_skip", 7, "uint32"), Field("shuffle", 8, "bool"),
        Field("new_height", 9, "uint32"), Field("new_width", 10, "uint32"),
        Field("is_color", 11, "bool"), Field("root_folder", 12, "string"),
        Field("has_label", 13, "bool"), Field("ignore_label", 15, "int32"),
        Field("label_type", 16, "LabelType"),
    ]),
    Message("InnerProductParameter", [
        Field("num_output", 1, "uint32"), Field("bias_term", 2, "bool"),
        Field("weight_filler", 3, _FILLER), Field("bias_filler", 4, _FILLER),
        Field("axis", 5, "int32"), Field("transpose", 6, "bool"),
    ]),
    Message("LRNParameter", [
        Field("local_size", 1, "uint32"), Field("alpha", 2, "float"), Field("beta", 3, "float"),
        Field("norm_region", 4, "NormRegion"), Field("k", 5, "float"), Field("engine", 6, "Engine"),
    ]),
    Message("PoolingParameter", [
        Field("pool", 1, "PoolMethod"), Field("kernel_size", 2, "uint32"), Field("stride", 3, "uint32"),
        Field("pad", 4, "uint32"), Field("kernel_h", 5, "uint32"), Field("kernel_w", 6, "uint32"),
        Field("stride_h", 7, "uint32"), Field("stride_w", 8, "uint32"),
        Field("pad_h", 9, "uint32"), Field("pad_w", 10, "uint32"), Field("engine", 11, "Engine"),
        Field("global_pooling", 12, "bool"), Field("round_mode", 13, "RoundMode"),
    ]),
    Message("PowerParameter", [Field("power", 1, "float"), Field("scale", 2, "float"),
                               Field("shift", 3, "float")]),
    Message("ReLUParameter", [Field("negative_slope", 1, "float"), Field("engine", 2, "Engine")]),
    Message("SigmoidParameter", [Field("engine", 1, "Engine")]),
    Message("TanHParameter", [Field("engine", 1, "Engine")]),
    Message("SoftmaxParameter", [Field("engine", 1, "Engine"), Field("axis", 2, "int32")]),
    Message("SliceParameter", [Field("slice_dim", 1, "uint32"), Field("slice_point", 2, "uint32", R),
                               Field("axis", 3, "int32")]),
    Message("ThresholdParameter", [Field("threshold", 1, "float")]),
    Message("ReshapeParameter", [Field("shape", 1, "BlobShape"), Field("axis", 2, "int32"),
                                 Field("num_axes", 3, "int32")]),
    Message("FlattenParameter", [Field("axis", 1, "int32"), Field("end_axis", 2, "int32")]),
    Message("ScaleParameter", [
        Field("axis", 1, "int32"), Field("num_axes", 2, "int32"), Field("filler", 3, _FILLER),
        Field("bias_term", 4, "bool"), Field("bias_filler", 5, _FILLER),
    ]),
    Message("InputParameter", [Field("shape", 1, "BlobShape", R)]),
    Message("CropParameter", [Field("axis", 1, "int32"), Field("offset", 2, "uint32", R)]),
    # DeepLab's own parameter messages.
    Message("InterpParameter", [
        Field("height", 1, "int32"), Field("width", 2, "int32"), Field("zoom_factor", 3, "int32"),
        Field("shrink_factor", 4, "int32"), Field("pad_beg", 5, "int32"), Field("pad_end", 6, "int32"),
    ]),
    Message("SegAccuracyParameter", [Field("metric", 1, "SegAccuracyMetric"),
                                     Field("ignore_label", 2, "int32", R),
                                     Field("reset", 3, "bool")]),
    Message("MatWriteParameter", [Field("prefix", 1, "string"), Field("source", 2, "string"),
                                  Field("strip", 3, "int32"), Field("period", 4, "int32")]),
    Message("DenseCRFParameter", [
        Field("max_iter", 1, "int32"), Field("pos_xy_std", 2, "float", R), Field("pos_w", 3, "float", R),
        Field("bi_xy_std", 4, "float", R), Field("bi_rgb_std", 5, "float", R),
        Field("bi_w", 6, "float", R), Field("output_probability", 7, "bool"),
    ]),
    Message("PaddingParameter", [Field("pad_beg", 1, "int32"), Field("pad_end", 2, "int32")]),
    # DeepLab v1's loss parameter: names from the released text files; numbers unknown.
    Message("SoftmaxLossParameter", [Field("weight_source", None, "string"),
                                     Field("ignore_label", None, "int32")]),
]

# Parameter messages shared by both LayerParameter dialects: (name, new number, V1 number, message).
_COMMON_PARAMS = [
    ("transform_param", 100, 36, "TransformationParameter"),
    ("accuracy_param", 102, 27, "AccuracyParameter"),
    ("argmax_param", 103, 23, "ArgMaxParameter"),
    ("concat_param", 104, 9, "ConcatParameter"),
    ("data_param", 107, 11, "DataParameter"),
    ("dropout_param", 108, 12, "DropoutParameter"),
    ("eltwise_param", 110, 24, "EltwiseParameter"),
    ("image_data_param", 115, 15, "ImageDataParameter"),
    ("inner_product_param", 117, 17, "InnerProductParameter"),
    ("lrn_param", 118, 18, "LRNParameter"),
    ("pooling_param", 121, 19, "PoolingParameter"),
    ("power_param", 122, 21, "PowerParameter"),
    ("relu_param", 123, 30, "ReLUParameter"),
    ("sigmoid_param", 124, 38, "SigmoidParameter"),
    ("softmax_param", 125, 39, "SoftmaxParameter"),
    ("slice_param", 126, 31, "SliceParameter"),
    ("tanh_param", 127, 37, "TanHParameter"),
    ("threshold_param", 128, 25, "ThresholdParameter"),
]


def _types(*names):
    return frozenset(names)


_LAYER_PARAMETER = Message("LayerParameter", [
    Field("name", 1, "string"), Field("type", 2, "string"),
    Field("bottom", 3, "string", R), Field("top", 4, "string", R),
    Field("phase", 10, "Phase"), Field("loss_weight", 5, "float", R),
    Field("param", 6, "ParamSpec", R), Field("blobs", 7, "BlobProto", R),
    Field("propagate_down", 11, "bool", R),
    Field("include", 8, "NetStateRule", R), Field("exclude", 9, "NetStateRule", R),
    *[Field(name, new, msg) for name, new, _, msg in _COMMON_PARAMS],
    Field("loss_param", 101, "LossParameter"),
    Field("convolution_param", 106, "ConvolutionParameter"),
    Field("reshape_param", 133, "ReshapeParameter"),
    Field("flatten_param", 135, "FlattenParameter"),
    Field("batch_norm_param", 139, "BatchNormParameter"),
    Field("bias_param", 141, "BiasParameter"),
    Field("scale_param", 142, "ScaleParameter"),
    # 143-146: DeepLab v2's meaning for its layer types, BVLC's for the others.
    Field("interp_param", 143, "InterpParameter", types=_types("Interp")),
    Field("input_param", 143, "InputParameter", types=_types("Input")),
    Field("seg_accuracy_param", 144, "SegAccuracyParameter", types=_types("SegAccuracy")),
    Field("crop_param", 144, "CropParameter", types=_types("Crop")),
    Field("mat_write_param", 145, "MatWriteParameter", types=_types("MatWrite")),
    Field("dense_crf_param", 146, "DenseCRFParameter", types=_types("DenseCRF")),
    # DeepLab v1's Padding layer has no new-dialect field number; it is kept by name so
    # that an upgraded v1 prototxt can still be written as text.
    Field("padding_param", None, "PaddingParameter", types=_types("Padding")),
])

_V1_LAYER_PARAMETER = Message("V1LayerParameter", [
    Field("bottom", 2, "string", R), Field("top", 3, "string", R), Field("name", 4, "string"),
    Field("type", 5, "V1LayerType"), Field("blobs", 6, "BlobProto", R),
    Field("blobs_lr", 7, "float", R), Field("weight_decay", 8, "float", R),
    Field("include", 32, "NetStateRule", R), Field("exclude", 33, "NetStateRule", R),
    Field("loss_weight", 35, "float", R),
    *[Field(name, v1, msg) for name, _, v1, msg in _COMMON_PARAMS],
    Field("convolution_param", 10, "V1ConvolutionParameter"),
    # 42: BVLC's loss_param, except in DeepLab v1's SEG_ACCURACY layers.
    Field("loss_param", 42, "LossParameter"),
    Field("seg_accuracy_param", 42, "SegAccuracyParameter", types=_types("SEG_ACCURACY")),
    Field("interp_param", 43, "InterpParameter"),
    Field("softmaxloss_param", None, "SoftmaxLossParameter"),
    Field("padding_param", 45, "PaddingParameter"),
    Field("mat_write_param", 46, "MatWriteParameter"),
    Field("dense_crf_param", 48, "DenseCRFParameter"),
    Field("param", 1001, "string", R), Field("blob_share_mode", 1002, "DimCheckMode", R),
    Field("strict_dim", 1003, "bool"),
])

_NET_PARAMETER = Message("NetParameter", [
    Field("name", 1, "string"), Field("layers", 2, "V1LayerParameter", R),
    Field("input", 3, "string", R), Field("input_dim", 4, "int32", R),
    Field("force_backward", 5, "bool"), Field("state", 6, "NetState"),
    Field("debug_info", 7, "bool"), Field("input_shape", 8, "BlobShape", R),
    Field("layer", 100, "LayerParameter", R),
])

#: Every message schema by name.
MESSAGES = {m.name: m for m in [*_MESSAGE_LIST, _LAYER_PARAMETER, _V1_LAYER_PARAMETER, _NET_PARAMETER]}

#: Enum name -> {value: name}; for 39 in V1LayerType, the BVLC name (see ENUMS).
ENUM_NAMES = {}
for _enum, _values in ENUMS.items():
    ENUM_NAMES[_enum] = {}
    for _name, _value in _values.items():
        ENUM_NAMES[_enum].setdefault(_value, _name)


def _check_tables():
    for message in MESSAGES.values():
        for f in message.fields:
            if f.kind not in SCALAR_WIRE and f.kind not in ENUMS and f.kind not in MESSAGES:
                raise AssertionError(f"{message.name}.{f.name}: unknown kind {f.kind}")


_check_tables()
