"""The AWS SDKs' conventions a switching user relies on: endpoint and region from the environment and the
profile, addressing, requester pays, and credentials from the environment, the shared files and profiles.

Requests are checked where they land: a recording proxy in front of the local server shows which
endpoint a client really talked to. Nothing here contacts any address but 127.0.0.1 (the AWS-endpoint
cases only resolve the URL; metadata services are disabled by the test environment)."""

from __future__ import annotations

import os
import textwrap

import pytest

from s3torch import S3Client, S3ClientConfig, S3Exception
from s3torch._awsenv import resolve_endpoint, resolve_region

ENV_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No endpoint, region or profile settings, and config files that do not exist."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    return monkeypatch


def _config(tmp_path, text: str) -> str:
    path = tmp_path / "config"
    path.write_text(textwrap.dedent(text))
    return str(path)


# -- resolution (pure logic) -------------------------------------------------------------------


def test_endpoint_resolution_order(tmp_path):
    env = {"AWS_ENDPOINT_URL": "http://general", "AWS_ENDPOINT_URL_S3": "http://s3-only"}
    env["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    assert resolve_endpoint("http://argument", environ=env) == "http://argument"
    assert resolve_endpoint(None, environ=env) == "http://s3-only"
    del env["AWS_ENDPOINT_URL_S3"]
    assert resolve_endpoint(None, environ=env) == "http://general"
    assert resolve_endpoint("", environ=env) == "http://general"
    del env["AWS_ENDPOINT_URL"]
    assert resolve_endpoint(None, environ=env) is None


def test_ignore_configured_endpoint_urls_keeps_only_the_argument(tmp_path):
    cfg = _config(tmp_path, "[default]\nendpoint_url = http://from-profile\n")
    env = {"AWS_ENDPOINT_URL": "http://general", "AWS_CONFIG_FILE": cfg}
    for value in ("true", "TRUE", "1"):
        env["AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"] = value
        assert resolve_endpoint(None, environ=env) is None
        assert resolve_endpoint("http://argument", environ=env) == "http://argument"
    env["AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"] = "false"
    assert resolve_endpoint(None, environ=env) == "http://general"


def test_endpoint_from_the_profile(tmp_path):
    cfg = _config(
        tmp_path,
        """
        [default]
        endpoint_url = http://default-profile
        [profile store]
        endpoint_url = http://store-general
        services = store-services
        [profile quiet]
        endpoint_url = http://quiet
        ignore_configured_endpoint_urls = true
        [services store-services]
        s3 =
          endpoint_url = http://store-s3
        """,
    )
    env = {"AWS_CONFIG_FILE": cfg}
    assert resolve_endpoint(None, environ=env) == "http://default-profile"
    assert resolve_endpoint(None, "store", environ=env) == "http://store-s3"
    assert resolve_endpoint(None, environ={**env, "AWS_PROFILE": "store"}) == "http://store-s3"
    assert resolve_endpoint(None, "quiet", environ=env) is None
    assert resolve_endpoint(None, "missing", environ=env) is None
    # The environment comes before the profile.
    assert resolve_endpoint(None, "store", environ={**env, "AWS_ENDPOINT_URL": "http://env"}) == "http://env"


def test_region_resolution_order_and_the_error_without_one(tmp_path):
    cfg = _config(tmp_path, "[default]\nregion = eu-west-3\n[profile other]\nregion = ap-south-1\n")
    env = {"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-central-1", "AWS_CONFIG_FILE": cfg}
    assert resolve_region("ca-central-1", environ=env) == "ca-central-1"
    assert resolve_region(None, environ=env) == "us-west-2"
    del env["AWS_REGION"]
    assert resolve_region(None, environ=env) == "eu-central-1"
    del env["AWS_DEFAULT_REGION"]
    assert resolve_region(None, environ=env) == "eu-west-3"
    assert resolve_region(None, "other", environ=env) == "ap-south-1"
    assert resolve_region(None, environ={**env, "AWS_PROFILE": "other"}) == "ap-south-1"
    with pytest.raises(ValueError, match=r"no region: pass region=.*AWS_REGION.*profile 'nowhere'"):
        resolve_region(None, "nowhere", environ=env)


def test_a_client_without_region_takes_the_environments_and_says_when_there_is_none(clean_env):
    with pytest.raises(ValueError, match="no region"):
        S3Client()
    clean_env.setenv("AWS_DEFAULT_REGION", "eu-north-1")
    assert S3Client().region == "eu-north-1"
    assert S3Client(None).region == "eu-north-1"
    assert S3Client("us-east-2").region == "us-east-2"


# -- addressing --------------------------------------------------------------------------------


def test_addressing_virtual_hosted_path_style_and_dotted_buckets(clean_env):
    aws = S3Client("us-east-1")
    assert aws.endpoint is None
    assert aws.request_url("my-bucket", "a/b c") == "https://my-bucket.s3.us-east-1.amazonaws.com/a/b%20c"
    # Dots would break the TLS wildcard certificate: path style (s3torchconnector #295).
    assert aws.request_url("my.dotted.bucket", "k") == "https://s3.us-east-1.amazonaws.com/my.dotted.bucket/k"
    forced = S3Client("us-east-1", s3client_config=S3ClientConfig(force_path_style=True))
    assert forced.request_url("b", "k") == "https://s3.us-east-1.amazonaws.com/b/k"
    store = S3Client("us-east-1", endpoint="https://store.example:9000")
    assert store.request_url("b", "k") == "https://b.store.example:9000/k"
    for endpoint in ("http://127.0.0.1:9000", "http://localhost:9000", "http://[::1]:9000"):
        assert S3Client("us-east-1", endpoint=endpoint).request_url("b", "k") == f"{endpoint}/b/k"


def test_ignoring_configured_endpoints_goes_to_aws(clean_env):
    clean_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    clean_env.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    client = S3Client("eu-west-1")
    assert client.endpoint is None
    assert client.request_url("b", "k") == "https://b.s3.eu-west-1.amazonaws.com/k"


# -- requests land where the resolution says ---------------------------------------------------


def _round_trip(client: S3Client, bucket: str, key: str = "env/obj") -> None:
    payload = os.urandom(64 * 1024)
    with client.put_object(bucket, key) as writer:
        writer.write(payload)
    assert client.get_object(bucket, key).read() == payload


def test_aws_endpoint_url_alone_points_every_client_at_the_store(
    clean_env, seaweed_server, seaweed_bucket, proxy_factory
):
    proxy = proxy_factory(seaweed_server)
    clean_env.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    clean_env.setenv("AWS_REGION", seaweed_server.region)
    client = S3Client()
    assert client.endpoint == proxy.endpoint
    _round_trip(client, seaweed_bucket)
    assert proxy.count("PUT") >= 1 and proxy.count("GET") >= 1


def test_the_s3_specific_variable_wins_and_the_other_store_sees_nothing(
    clean_env, seaweed_server, seaweed_bucket, proxy_factory
):
    chosen, other = proxy_factory(seaweed_server), proxy_factory(seaweed_server)
    clean_env.setenv("AWS_ENDPOINT_URL_S3", chosen.endpoint)
    clean_env.setenv("AWS_ENDPOINT_URL", other.endpoint)
    _round_trip(S3Client(seaweed_server.region), seaweed_bucket)
    assert chosen.count() >= 2 and other.count() == 0
    # The argument comes first.
    chosen.reset()
    _round_trip(S3Client(seaweed_server.region, endpoint=other.endpoint), seaweed_bucket)
    assert other.count() >= 2 and chosen.count() == 0


def test_the_profile_endpoint_is_used_when_the_environment_has_none(
    clean_env, tmp_path, seaweed_server, seaweed_bucket, proxy_factory
):
    proxy = proxy_factory(seaweed_server)
    cfg = _config(
        tmp_path, f"[profile store]\nendpoint_url = {proxy.endpoint}\nregion = {seaweed_server.region}\n"
    )
    clean_env.setenv("AWS_CONFIG_FILE", cfg)
    clean_env.setenv("AWS_PROFILE", "store")
    client = S3Client()
    assert (client.endpoint, client.region) == (proxy.endpoint, seaweed_server.region)
    _round_trip(client, seaweed_bucket)
    assert proxy.count("GET") >= 1


def test_dcp_save_and_load_with_only_aws_endpoint_url(
    clean_env, seaweed_server, seaweed_bucket, proxy_factory
):
    torch = pytest.importorskip("torch")
    import torch.distributed.checkpoint as dcp

    from s3torch.dcp import S3StorageReader, S3StorageWriter

    proxy = proxy_factory(seaweed_server)
    clean_env.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    path = f"s3://{seaweed_bucket}/ckpt-env"
    state = {"w": torch.arange(1000, dtype=torch.float32), "b": torch.ones(7)}
    dcp.save(state, storage_writer=S3StorageWriter(seaweed_server.region, path))
    loaded = {"w": torch.zeros(1000), "b": torch.zeros(7)}
    dcp.load(loaded, storage_reader=S3StorageReader(seaweed_server.region, path))
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["b"], state["b"])
    assert proxy.count("PUT") >= 1 and proxy.count("GET") >= 1
    proxy.wait_idle()
    agents = {r.headers.get("user-agent", "") for r in proxy.requests}
    dcp_comment = f"(dcp; {torch.__version__}; md/reader_type#"
    assert agents and all(a.startswith("s3torch/") and dcp_comment in a for a in agents), agents


# -- requester pays ------------------------------------------------------------------------------


def test_requester_pays_header_on_every_request(seaweed_server, seaweed_bucket, proxy_factory, make_client):
    proxy = proxy_factory(seaweed_server)
    client = make_client(seaweed_server, endpoint=proxy.endpoint, requester_pays=True)
    payload = os.urandom(12 * 1024 * 1024)  # two parts: create, two uploads, complete
    with client.put_object(seaweed_bucket, "rp/big") as writer:
        writer.write(payload)
    assert client.get_object(seaweed_bucket, "rp/big").read() == payload
    client.head_object(seaweed_bucket, "rp/big")
    list(client.list_objects(seaweed_bucket, "rp/"))
    client.delete_object(seaweed_bucket, "rp/big")
    proxy.wait_idle()
    requests = proxy.requests
    methods = {r.method for r in requests}
    assert {"POST", "PUT", "GET", "HEAD", "DELETE"} <= methods
    assert sum(1 for r in requests if r.method == "PUT") >= 2
    missing = [(r.method, r.target) for r in requests if r.headers.get("x-amz-request-payer") != "requester"]
    assert not missing


def test_requester_pays_off_by_default_and_refused_with_unsigned(
    seaweed_server, seaweed_bucket, proxy_factory, make_client
):
    proxy = proxy_factory(seaweed_server)
    _round_trip(make_client(seaweed_server, endpoint=proxy.endpoint), seaweed_bucket)
    proxy.wait_idle()
    assert proxy.requests and all("x-amz-request-payer" not in r.headers for r in proxy.requests)
    assert S3ClientConfig().requester_pays is False
    with pytest.raises(ValueError, match="requester_pays=True needs signed requests"):
        S3ClientConfig(requester_pays=True, unsigned=True)


# -- credentials -----------------------------------------------------------------------------------


@pytest.fixture
def no_env_credentials(clean_env, seaweed_server):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        clean_env.delenv(var, raising=False)
    clean_env.setenv("AWS_REGION", seaweed_server.region)
    return clean_env


def _client_for(server, **config) -> S3Client:
    return S3Client(endpoint=server.endpoint, s3client_config=S3ClientConfig(**config))


def test_credentials_from_the_environment_are_verified_by_the_server(
    clean_env, seaweed_server, seaweed_bucket
):
    clean_env.setenv("AWS_REGION", seaweed_server.region)
    clean_env.setenv("AWS_ACCESS_KEY_ID", seaweed_server.access_key)
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", seaweed_server.secret_key)
    _round_trip(_client_for(seaweed_server), seaweed_bucket)
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(S3Exception) as err:
        _client_for(seaweed_server).head_object(seaweed_bucket, "env/obj")
    assert err.value.status == 403


def test_credentials_from_the_shared_credentials_file_and_aws_profile(
    no_env_credentials, tmp_path, seaweed_server, seaweed_bucket
):
    creds = tmp_path / "credentials"
    creds.write_text(
        f"[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n"
        f"[trainer]\naws_access_key_id = {seaweed_server.access_key}\n"
        f"aws_secret_access_key = {seaweed_server.secret_key}\n"
    )
    no_env_credentials.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    with pytest.raises(S3Exception) as err:
        _client_for(seaweed_server).head_object(seaweed_bucket, "nothing")
    assert err.value.status == 403  # the default profile's keys were used, and refused
    no_env_credentials.setenv("AWS_PROFILE", "trainer")
    _round_trip(_client_for(seaweed_server), seaweed_bucket)


def test_credentials_from_a_named_profile_in_the_config_file(
    no_env_credentials, tmp_path, seaweed_server, seaweed_bucket
):
    cfg = _config(
        tmp_path,
        f"""
        [profile loader]
        aws_access_key_id = {seaweed_server.access_key}
        aws_secret_access_key = {seaweed_server.secret_key}
        """,
    )
    no_env_credentials.setenv("AWS_CONFIG_FILE", cfg)
    _round_trip(_client_for(seaweed_server, profile="loader"), seaweed_bucket)


def test_a_profile_that_does_not_exist_fails_clearly(no_env_credentials, seaweed_server, seaweed_bucket):
    with pytest.raises(S3Exception):
        _client_for(seaweed_server, profile="no-such-profile").head_object(seaweed_bucket, "k")
