# Post-processed by `python -m server.codegen` (relative imports, private descriptor pool).
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("datatype", "shape", "raw", "fp32")
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    FP32_FIELD_NUMBER: _ClassVar[int]
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    raw: bytes
    fp32: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., raw: _Optional[bytes] = ..., fp32: _Optional[_Iterable[float]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("model_name", "images")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    images: Tensor
    def __init__(self, model_name: _Optional[str] = ..., images: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class SupportPoint(_message.Message):
    __slots__ = ("index", "weight")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    index: int
    weight: float
    def __init__(self, index: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("abstain", "adversarial", "flags", "reasons")
    ABSTAIN_FIELD_NUMBER: _ClassVar[int]
    ADVERSARIAL_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    abstain: bool
    adversarial: bool
    flags: int
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, abstain: _Optional[bool] = ..., adversarial: _Optional[bool] = ..., flags: _Optional[int] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("prediction", "class_name", "logits", "margins", "margin_min", "nearest_class", "hull_distance", "hull_lower", "ambiguity", "in_union", "n_balls", "union_slack", "support", "decision", "ood_score", "p_value", "sphere_distance", "sphere_lower")
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    MARGINS_FIELD_NUMBER: _ClassVar[int]
    MARGIN_MIN_FIELD_NUMBER: _ClassVar[int]
    NEAREST_CLASS_FIELD_NUMBER: _ClassVar[int]
    HULL_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    HULL_LOWER_FIELD_NUMBER: _ClassVar[int]
    AMBIGUITY_FIELD_NUMBER: _ClassVar[int]
    IN_UNION_FIELD_NUMBER: _ClassVar[int]
    N_BALLS_FIELD_NUMBER: _ClassVar[int]
    UNION_SLACK_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    OOD_SCORE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    SPHERE_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SPHERE_LOWER_FIELD_NUMBER: _ClassVar[int]
    prediction: int
    class_name: str
    logits: _containers.RepeatedScalarFieldContainer[float]
    margins: _containers.RepeatedScalarFieldContainer[float]
    margin_min: float
    nearest_class: int
    hull_distance: float
    hull_lower: float
    ambiguity: float
    in_union: bool
    n_balls: int
    union_slack: float
    support: _containers.RepeatedCompositeFieldContainer[SupportPoint]
    decision: Decision
    ood_score: float
    p_value: float
    sphere_distance: float
    sphere_lower: float
    def __init__(self, prediction: _Optional[int] = ..., class_name: _Optional[str] = ..., logits: _Optional[_Iterable[float]] = ..., margins: _Optional[_Iterable[float]] = ..., margin_min: _Optional[float] = ..., nearest_class: _Optional[int] = ..., hull_distance: _Optional[float] = ..., hull_lower: _Optional[float] = ..., ambiguity: _Optional[float] = ..., in_union: _Optional[bool] = ..., n_balls: _Optional[int] = ..., union_slack: _Optional[float] = ..., support: _Optional[_Iterable[_Union[SupportPoint, _Mapping]]] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., ood_score: _Optional[float] = ..., p_value: _Optional[float] = ..., sphere_distance: _Optional[float] = ..., sphere_lower: _Optional[float] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("model_name", "results")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    results: _containers.RepeatedCompositeFieldContainer[Result]
    def __init__(self, model_name: _Optional[str] = ..., results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ("model_name",)
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    def __init__(self, model_name: _Optional[str] = ...) -> None: ...

class Thresholds(_message.Message):
    __slots__ = ("ambiguity", "hull", "d_min", "target_abstain_rate", "target_flag_rate", "n_calib")
    AMBIGUITY_FIELD_NUMBER: _ClassVar[int]
    HULL_FIELD_NUMBER: _ClassVar[int]
    D_MIN_FIELD_NUMBER: _ClassVar[int]
    TARGET_ABSTAIN_RATE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FLAG_RATE_FIELD_NUMBER: _ClassVar[int]
    N_CALIB_FIELD_NUMBER: _ClassVar[int]
    ambiguity: float
    hull: float
    d_min: float
    target_abstain_rate: float
    target_flag_rate: float
    n_calib: int
    def __init__(self, ambiguity: _Optional[float] = ..., hull: _Optional[float] = ..., d_min: _Optional[float] = ..., target_abstain_rate: _Optional[float] = ..., target_flag_rate: _Optional[float] = ..., n_calib: _Optional[int] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("model_name", "model_sha256", "input_shape", "class_names", "n_features", "n_train", "nonneg", "lipschitz", "thresholds", "guard_version", "geometry")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    N_TRAIN_FIELD_NUMBER: _ClassVar[int]
    NONNEG_FIELD_NUMBER: _ClassVar[int]
    LIPSCHITZ_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    GUARD_VERSION_FIELD_NUMBER: _ClassVar[int]
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_sha256: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    class_names: _containers.RepeatedScalarFieldContainer[str]
    n_features: int
    n_train: int
    nonneg: bool
    lipschitz: float
    thresholds: Thresholds
    guard_version: str
    geometry: bool
    def __init__(self, model_name: _Optional[str] = ..., model_sha256: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., class_names: _Optional[_Iterable[str]] = ..., n_features: _Optional[int] = ..., n_train: _Optional[int] = ..., nonneg: _Optional[bool] = ..., lipschitz: _Optional[float] = ..., thresholds: _Optional[_Union[Thresholds, _Mapping]] = ..., guard_version: _Optional[str] = ..., geometry: _Optional[bool] = ...) -> None: ...
