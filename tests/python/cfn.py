"""CloudFormation templates as the IAM tests read them: YAML with the short-form tags,
every policy resolved (parameters, pseudo parameters, !Sub, !GetAtt, !If with the template's
conditions) into the (action, resource, condition) triples a role grants."""
import json
import pathlib
import re

import yaml

ACCOUNT, REGION, PARTITION, STACK = "111122223333", "eu-west-1", "aws", "inference-test"
NOVALUE = object()
SM = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
INFERENCE = pathlib.Path(__file__).resolve().parents[2] / "infra" / "aws" / "inference.yaml"
KMS_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# The inference template's required parameters, as the tests deploy it.
INFERENCE_PARAMS = {
    "ImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mlops-inference:abc123",
    "ImageRepositoryName": "mlops-inference",
    "SageMakerEndpointName": "churn-prod",
    "UserInteractionFgName": "churn-interactions-v2",
    "ModelPackageGroup": "churn-pkg",
    "FeatureGroupKmsKeyArn": "",
    "CertificateArn": f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/0000",
    "S3PrefixListId": "pl-63a5400a",
}


class Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags, turned into their long form."""


def _construct(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


Loader.add_multi_constructor("!", _construct)


def load(path):
    return yaml.load(path.read_text(), Loader=Loader)


class Resolver:
    def __init__(self, template, params):
        self.t = template
        self.params = {k: v.get("Default") for k, v in template["Parameters"].items()}
        self.params.update(params)
        missing = [k for k, v in self.params.items() if v is None]
        assert not missing, f"the test gives no value for {missing}"
        self.params.update({"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": PARTITION,
                            "AWS::StackName": STACK, "AWS::URLSuffix": "amazonaws.com"})

    def condition(self, name):
        return self.truth(self.t["Conditions"][name])

    def truth(self, c):
        (fn, arg), = c.items()
        if fn == "Fn::Not":
            return not self.truth(arg[0])
        if fn == "Fn::Equals":
            return str(self.value(arg[0])) == str(self.value(arg[1]))
        if fn == "Fn::And":
            return all(self.truth(a) for a in arg)
        if fn == "Fn::Or":
            return any(self.truth(a) for a in arg)
        if fn == "Condition":
            return self.condition(arg)
        raise AssertionError(f"unknown condition function {fn}")

    def getatt(self, resource, attr):
        r = self.t["Resources"][resource]
        if r["Type"] == "AWS::Logs::LogGroup" and attr == "Arn":
            name = self.value(r["Properties"]["LogGroupName"])
            return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*"
        return f"<{resource}.{attr}>"

    def ref(self, name):
        if name == "AWS::NoValue":
            return NOVALUE
        if name in self.params:
            return self.params[name]
        assert name in self.t["Resources"], f"!Ref to nothing: {name}"
        return f"<{name}>"

    def sub(self, text, extra=None):
        def one(m):
            name = m.group(1)
            if extra and name in extra:
                return str(self.value(extra[name]))
            if "." in name and name.split(".")[0] in self.t["Resources"]:
                return str(self.getatt(*name.split(".", 1)))
            return str(self.ref(name))
        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def value(self, v):
        if isinstance(v, list):
            return [x for x in (self.value(i) for i in v) if x is not NOVALUE]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (fn, arg), = v.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::Sub":
                return self.sub(arg) if isinstance(arg, str) else self.sub(arg[0], arg[1])
            if fn == "Fn::GetAtt":
                return self.getatt(*arg)
            if fn == "Fn::If":
                return self.value(arg[1] if self.condition(arg[0]) else arg[2])
            if fn == "Fn::FindInMap":
                name, key, field = (self.value(a) for a in arg)
                return self.t["Mappings"][name][key][field]
            if fn == "Fn::Join":
                return arg[0].join(self.value(arg[1]))
            assert not fn.startswith("Fn::"), f"the test cannot resolve {fn} here"
        return {k: x for k, x in ((k, self.value(i)) for k, i in v.items()) if x is not NOVALUE}


def as_list(v):
    return v if isinstance(v, list) else [v]


def grants(template, params, role):
    """{(action, resource, condition-json)} an IAM role's inline policies allow."""
    r = Resolver(template, params)
    props = template["Resources"][role]["Properties"]
    out = set()
    policies = r.value(props.get("Policies", []))
    for policy in [] if policies is NOVALUE else policies:
        for st in policy["PolicyDocument"]["Statement"]:
            assert st["Effect"] == "Allow", (role, st)
            assert "NotAction" not in st and "NotResource" not in st, (role, st)
            cond = json.dumps(st.get("Condition"), sort_keys=True) if "Condition" in st else None
            for action in as_list(st["Action"]):
                for resource in as_list(st["Resource"]):
                    out.add((action, resource, cond))
    return out


def plain(pairs):
    return {(a, r) for a, r, _ in pairs}


def roles(template):
    return [k for k, v in template["Resources"].items() if v["Type"] == "AWS::IAM::Role"]
