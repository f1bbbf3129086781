"""Run by the KServe test in its own virtualenv (the KServe SDK pins psutil < 6, the test venv has 7): checks
manifests against the KServe SDK's generated OpenAPI models (and, nested, the Kubernetes client's), rejecting
unknown fields and wrong types. Prints one line per resource; exits 1 on the first problem."""

import datetime
import sys

import kserve.models
import kubernetes.client.models
import yaml

PRIMITIVES = {
    "str": str,
    "int": int,
    "bool": bool,
    "float": (int, float),
    "object": object,
    "datetime": (str, datetime.datetime),
    "date": (str, datetime.date),
}
KINDS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}


def model_class(name: str):
    return getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name)


def check(value, type_name: str, where: str) -> None:
    if type_name.startswith("Optional["):
        type_name = type_name[9:-1]
    if type_name.lower().startswith("list["):
        assert isinstance(value, list), f"{where}: expected a list"
        for index, item in enumerate(value):
            check(item, type_name[5:-1], f"{where}[{index}]")
    elif type_name.startswith(("dict(", "Dict[")):  # the generators write dict(str, X) or Dict[str, X]
        assert isinstance(value, dict), f"{where}: expected a mapping"
        inner = type_name[5:-1].split(", ", 1)[1]
        for key, item in value.items():
            check(item, inner, f"{where}.{key}")
    elif type_name in PRIMITIVES:
        assert isinstance(value, PRIMITIVES[type_name]), f"{where}: expected {type_name}, got {value!r}"
    else:
        cls = model_class(type_name)
        assert isinstance(value, dict), f"{where}: expected an object ({type_name})"
        fields = {json_name: python_name for python_name, json_name in cls.attribute_map.items()}
        for key, item in value.items():
            assert key in fields, f"{where}: unknown field '{key}' for {type_name}"
            check(item, cls.openapi_types[fields[key]], f"{where}.{key}")


for path in sys.argv[1:]:
    for document in yaml.safe_load_all(open(path)):
        name = KINDS[(document["apiVersion"], document["kind"])]
        try:
            check(document, name, document["kind"])
        except AssertionError as problem:
            print(f"{path}: {problem}")
            sys.exit(1)
        print(f"{path}: {document['kind']} {document['metadata']['name']} valid against kserve.models.{name}")
