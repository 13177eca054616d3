"""A real SAML 2.0 identity provider for the tests: pysaml2 (PyPI) signing with Debian's xmlsec1.

    saml_idp.py init <dir> <base-url>            keys, certificates and the IdP's metadata (<dir>/idp.xml)
    saml_idp.py responses <dir> <sp-metadata>    reads a JSON list of cases on stdin, prints
                                                 {case: base64 SAMLResponse} for each
    saml_idp.py serve <dir> <sp-metadata> <port> an HTTP IdP on 127.0.0.1 that signs in the user
                                                 named in <dir>/user.json without asking (for
                                                 browser tests): SP-initiated (/sso, redirect
                                                 binding) and IdP-initiated (/start?RelayState=…)

A case is {"name", "user", "roles", "in_response_to", "relay_state", "attack"}; the attacks
change a correctly made response the way an attacker would (see `attack`).
"""

import base64
import copy
import datetime
import http.server
import json
import os
import subprocess
import sys
import urllib.parse
from html import escape

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, saml
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_PERSISTENT, NameID
from saml2.server import Server
from saml2.sigver import pre_signature_part
from saml2.xmldsig import DIGEST_SHA1, DIGEST_SHA256, SIG_RSA_SHA1, SIG_RSA_SHA256

ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"
RESPONSE = "urn:oasis:names:tc:SAML:2.0:protocol:Response"
NS = {"saml": "urn:oasis:names:tc:SAML:2.0:assertion", "samlp": "urn:oasis:names:tc:SAML:2.0:protocol"}
ROLE = "https://aws.amazon.com/SAML/Attributes/Role"
DURATION = "https://aws.amazon.com/SAML/Attributes/SessionDuration"
MFA = "https://refeds.org/profile/mfa"
PASSWORD = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"


def keypair(directory, name):
    key, cert = os.path.join(directory, f"{name}.key"), os.path.join(directory, f"{name}.pem")
    if not os.path.exists(cert):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", f"/CN={name}",
             "-keyout", key, "-out", cert],
            check=True, capture_output=True)
    return key, cert


def config(directory, sp_metadata=None, name="idp"):
    with open(os.path.join(directory, "base-url")) as f:
        base = f.read().strip()
    key, cert = keypair(directory, name)
    entity = f"{base}/idp" if name == "idp" else f"{base}/{name}"
    conf = {
        "entityid": entity,
        "xmlsec_binary": "/usr/bin/xmlsec1",
        "key_file": key,
        "cert_file": cert,
        "allow_unknown_attributes": True,
        "service": {"idp": {
            "endpoints": {"single_sign_on_service": [(f"{base}/sso", BINDING_HTTP_REDIRECT)]},
            "name_id_format": [NAMEID_FORMAT_PERSISTENT],
            "policy": {"default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None, "name_form": NAME_FORMAT_URI}},
        }},
    }
    if sp_metadata:
        conf["metadata"] = {"local": [sp_metadata]}
    c = IdPConfig()
    c.load(conf)
    return c


def init(directory, base):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "base-url"), "w") as f:
        f.write(base)
    keypair(directory, "evil")
    text = create_metadata_string(None, config=config(directory), valid=24, sign=False)
    with open(os.path.join(directory, "idp.xml"), "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode())


def sp_endpoint(server):
    sp = next(iter(server.metadata.with_descriptor("spsso")))
    acs = server.metadata.assertion_consumer_service(sp, BINDING_HTTP_POST)[0]["location"]
    return sp, acs


def make(server, case, sign=True):
    """A response for the case's user; signed (assertion only) unless `sign` is false."""
    sp, acs = sp_endpoint(server)
    if case.get("authn_request"):
        case = {**case, "in_response_to": server.parse_authn_request(case["authn_request"], BINDING_HTTP_REDIRECT).message.id}
    roles = case.get("roles", ["saml-stack"])
    account, idp_name = case.get("account", "000000000000"), case.get("idp_name", "idp_sample")
    identity = {
        ROLE: [f"arn:datasandbox:identity::{account}:role/{r},arn:datasandbox:identity::{account}:saml-provider/{idp_name}" for r in roles],
        DURATION: [str(case.get("duration", 3600))],
    }
    response = server.create_authn_response(
        identity,
        in_response_to=case.get("in_response_to"),
        destination=case.get("destination", acs),
        sp_entity_id=case.get("audience", sp),
        name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=case["user"]),
        authn={"class_ref": MFA if case.get("mfa", True) else PASSWORD, "authn_auth": server.config.entityid},
        sign_assertion=False,
        sign_response=False,
    )
    text = str(response)
    if sign:
        text = sign_element(server, text, ASSERTION)
    return text


def sign_element(server, text, node_name, sha1=False):
    """Inserts a signature template into the assertion (or response) and signs it with xmlsec1."""
    import xml.etree.ElementTree as ET
    for prefix, uri in NS.items():
        ET.register_namespace(prefix, uri)
    ET.register_namespace("ds", "http://www.w3.org/2000/09/xmldsig#")
    root = ET.fromstring(text)
    target = root if node_name == RESPONSE else root.find("saml:Assertion", NS)
    algorithms = (SIG_RSA_SHA1, DIGEST_SHA1) if sha1 else (SIG_RSA_SHA256, DIGEST_SHA256)
    template = ET.fromstring(str(pre_signature_part(target.get("ID"), server.sec.my_cert, 1, digest_alg=algorithms[1], sign_alg=algorithms[0])))
    issuer = target.find("saml:Issuer", NS)
    target.insert(list(target).index(issuer) + 1 if issuer is not None else 0, template)
    unsigned = ET.tostring(root, encoding="unicode")
    return server.sec.sign_statement(unsigned, node_name=node_name, node_id=target.get("ID"))


def shift(text, element, attribute, seconds):
    import re
    def moved(m):
        when = datetime.datetime.strptime(m.group(2), "%Y-%m-%dT%H:%M:%SZ") + datetime.timedelta(seconds=seconds)
        return f'{m.group(1)}"{when.strftime("%Y-%m-%dT%H:%M:%SZ")}"'
    return re.sub(rf'(<saml:{element}\b[^>]*?\b{attribute}=)"([^"]+)"', moved, text)


def attack(directory, sp_metadata, case):
    server = Server(config=config(directory, sp_metadata))
    kind = case.get("attack")
    if kind is None:
        return make(server, case)
    if kind == "unsigned":
        return make(server, case, sign=False)
    if kind == "wrong_audience":
        text = make(server, case, sign=False).replace(f"<saml:Audience>{sp_endpoint(server)[0]}<", "<saml:Audience>https://other-sp.test/saml<")
        return sign_element(server, text, ASSERTION)
    if kind == "wrong_recipient":
        text = make(server, case, sign=False).replace(f'Recipient="{sp_endpoint(server)[1]}"', 'Recipient="https://other-sp.test/acs"')
        return sign_element(server, text, ASSERTION)
    if kind == "expired":
        text = shift(make(server, case, sign=False), "Conditions", "NotOnOrAfter", -3600)
        text = shift(shift(text, "SubjectConfirmationData", "NotOnOrAfter", -3600), "Conditions", "NotBefore", -3600)
        return sign_element(server, text, ASSERTION)
    if kind == "not_yet_valid":
        text = shift(make(server, case, sign=False), "Conditions", "NotBefore", 3600)
        return sign_element(server, shift(text, "Conditions", "NotOnOrAfter", 3600), ASSERTION)
    if kind == "unknown_issuer":
        # Another IdP, with its own key and entity id, that the SP was never told about.
        evil = Server(config=config(directory, sp_metadata, name="evil"))
        return make(evil, case)
    if kind == "wrong_key":
        # Our IdP's name, signed with another key (whose certificate rides along in KeyInfo).
        evil = Server(config=config(directory, sp_metadata, name="evil"))
        text = make(server, case, sign=False)
        return sign_element(evil, text, ASSERTION)
    if kind == "tampered_attribute":
        signed = make(server, case)
        return signed.replace(":role/saml-stack,", ":role/admin,")
    if kind == "wrapping":
        # The attacker holds a genuinely signed response for themselves and forges an assertion
        # for the victim beside it, hoping the SP checks one assertion and reads the other.
        import xml.etree.ElementTree as ET
        signed = make(server, case)
        forged = make(server, {**case, "user": case["victim"]}, sign=False)
        root = ET.fromstring(signed)
        fake = ET.fromstring(forged).find("saml:Assertion", NS)
        fake.set("ID", fake.get("ID") + "-forged")
        root.insert(list(root).index(root.find("saml:Assertion", NS)), fake)
        return ET.tostring(root, encoding="unicode")
    if kind == "wrapping_extensions":
        # The signed assertion hidden in the response's Extensions, a forged one in its place.
        import xml.etree.ElementTree as ET
        signed = make(server, case)
        forged = make(server, {**case, "user": case["victim"]}, sign=False)
        root = ET.fromstring(signed)
        genuine = root.find("saml:Assertion", NS)
        root.remove(genuine)
        extensions = ET.SubElement(root, f"{{{NS['samlp']}}}Extensions")
        extensions.append(genuine)
        root.append(ET.fromstring(forged).find("saml:Assertion", NS))
        return ET.tostring(root, encoding="unicode")
    if kind == "comment_in_name_id":
        # The IdP signs "alice@example.test.evil"; a comment is slipped in after signing, which
        # exclusive C14N ignores: an SP reading only the first text node would see the victim.
        signed = make(server, {**case, "user": case["victim"] + ".evil"})
        return signed.replace(f">{case['victim']}.evil<", f">{case['victim']}<!---->.evil<")
    if kind == "doctype":
        signed = make(server, case)
        body = signed.split("?>", 1)[1] if signed.startswith("<?xml") else signed
        return '<!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + body
    if kind == "sha1":
        return sign_element(server, make(server, case, sign=False), ASSERTION, sha1=True)
    if kind == "response_signed":
        # Not an attack: the whole response signed instead of the assertion.
        return sign_element(server, make(server, case, sign=False), RESPONSE)
    raise SystemExit(f"unknown attack {kind}")


def responses(directory, sp_metadata):
    cases = json.load(sys.stdin)
    out = {c["name"]: base64.b64encode(attack(directory, sp_metadata, c).encode()).decode() for c in cases}
    json.dump(out, sys.stdout)


def auto_post(action, response, relay_state):
    relay = f'<input type="hidden" name="RelayState" value="{escape(relay_state)}">' if relay_state else ""
    return f"""<!doctype html><html><body onload="document.forms[0].submit()">
<form method="post" action="{escape(action)}"><input type="hidden" name="SAMLResponse" value="{escape(response)}">{relay}
<noscript><button>Continue</button></noscript></form></body></html>"""


def serve(directory, sp_metadata, port):
    server = Server(config=config(directory, sp_metadata))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
            with open(os.path.join(directory, "user.json")) as f:
                case = json.load(f)
            if url.path == "/sso":
                request = server.parse_authn_request(query["SAMLRequest"], BINDING_HTTP_REDIRECT)
                case["in_response_to"] = request.message.id
                relay = query.get("RelayState", "")
            elif url.path == "/start":
                relay = query.get("RelayState", "")
            else:
                self.send_error(404)
                return
            text = make(server, case)
            page = auto_post(sp_endpoint(server)[1], base64.b64encode(text.encode()).decode(), relay).encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    print("listening", flush=True)
    http.server.HTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"init": init, "responses": responses, "serve": serve}[command](*args)
