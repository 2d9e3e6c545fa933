"""`edgepack push`, `pull` (bundles as OCI artifacts) and `kserve` (Kubernetes manifests)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgepack.runtime.oci import (ARTIFACT_TYPE, Reference, RegistryConfig, pull_bundle,
                                  push_bundle)


def _registry_options(f):
    f = click.option("--plain-http/--https", "plain_http", default=None,
                     help="Talk http:// to the registry [http only for loopback addresses].")(f)
    f = click.option("--timeout", default=30.0, show_default=True,
                     type=click.FloatRange(min=0.1),
                     help="Seconds per registry request.")(f)
    return f


@click.command()
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_registry_options
def push(bundle: Path, reference: str, as_json: bool, plain_http, timeout) -> None:
    """Push BUNDLE to a registry as an OCI artifact: REGISTRY[:PORT]/REPO[:TAG].

    Artifact type application/vnd.edgepack.bundle.v1+zip; the manifest's annotations carry
    the bundle's name, version, sha256, engine and required features. Credentials, when the
    registry needs them: EDGEPACK_REGISTRY_USERNAME / EDGEPACK_REGISTRY_PASSWORD.
    """
    result = push_bundle(bundle, Reference.parse(reference),
                         RegistryConfig.from_env(plain_http=plain_http, timeout=timeout))
    if as_json:
        click.echo(json.dumps({"reference": str(result.reference), "digest": result.digest,
                               "size": result.size, "artifactType": ARTIFACT_TYPE,
                               "annotations": result.annotations}, indent=2))
    else:
        click.echo(f"pushed {bundle.name} ({result.size} bytes) to {result.reference}")
        click.echo(f"digest: {result.digest}")


@click.command()
@click.argument("reference")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the bundle [NAME.edgepack in the current directory].")
@click.option("--trusted-key", type=click.Path(exists=True, dir_okay=False),
              help="Refuse the bundle unless its signature verifies with this public key.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_registry_options
def pull(reference: str, output: Path | None, trusted_key, as_json: bool, plain_http,
         timeout) -> None:
    """Pull a bundle from a registry, verified: the blob's sha256 must match the manifest,
    and the bundle must pass the same checks as any bundle (checksums, signature)."""
    ref = Reference.parse(reference)
    config = RegistryConfig.from_env(plain_http=plain_http, timeout=timeout)
    if output is None:
        from edgepack.runtime.oci import ANNOTATION_PREFIX, RegistryClient

        artifact = RegistryClient(config).resolve(ref)
        name = artifact.annotations.get(ANNOTATION_PREFIX + "name") or \
            ref.repository.rsplit("/", 1)[-1]
        output = Path(Path(name).name + ".edgepack")
        result = pull_bundle(ref, output, config, trusted_key, artifact)
    else:
        result = pull_bundle(ref, output, config, trusted_key)
    if as_json:
        click.echo(json.dumps({"reference": str(result.reference), "digest": result.digest,
                               "path": str(result.path), "annotations": result.annotations},
                              indent=2))
    else:
        click.echo(f"pulled {result.reference} ({result.digest}) to {result.path}, verified")


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--image", required=True,
              help="Container image with edgepack[onnx|litert,serve] installed.")
@click.option("--storage", "storage_uri", required=True,
              help="storageUri KServe fetches the bundle from (s3://, gs://, pvc://, https://, "
                   "oci:// modelcar image).")
@click.option("--device", "-d", required=True,
              help="Device profile of the nodes: memory request and kubernetes.io/arch.")
@click.option("--name", help="InferenceService name [the bundle's name].")
@click.option("--runtime-name", default="edgepack", show_default=True,
              help="ServingRuntime name.")
@click.option("--namespace", help="metadata.namespace of both objects.")
@click.option("--model-path", help="Path of the bundle inside the pod [/mnt/models/<file>].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the YAML here instead of stdout.")
@click.option("--json", "as_json", is_flag=True, help="Print the two objects as JSON.")
def kserve(bundle: Path, image: str, storage_uri: str, device: str, name, runtime_name,
           namespace, model_path, output: Path | None, as_json: bool) -> None:
    """Write a KServe ServingRuntime (edgepack serve as a V2 runtime, model format
    `edgepack`) and an InferenceService for BUNDLE."""
    from edgepack.kserve import KServeConfig, kserve_manifests, to_yaml

    docs = kserve_manifests(bundle, KServeConfig(
        image=image, storage_uri=storage_uri, device=device, name=name,
        runtime_name=runtime_name, namespace=namespace, model_path=model_path))
    text = json.dumps(docs, indent=2) + "\n" if as_json else to_yaml(docs)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}: ServingRuntime {docs[0]['metadata']['name']}, "
                   f"InferenceService {docs[1]['metadata']['name']}")


def register(cli: click.Group) -> None:
    """Add push, pull and kserve to the edgepack command group."""
    for command in (push, pull, kserve):
        cli.add_command(command)


def follow_tags(path: Path, references: tuple[str, ...], poll: float,
                trusted_key: str | None) -> list:
    """For `serve --pull`: one started TagFollower per reference, writing into PATH."""
    if not references:
        return []
    from edgepack.runtime.oci_follow import TagFollower

    if not path.is_dir() or (path / "manifest.json").exists():
        raise click.UsageError("--pull needs PATH to be a model repository directory "
                               "(the pulled bundles are written into PATH/<model>/N.edgepack)")
    config = RegistryConfig.from_env()
    followers = [TagFollower(Reference.parse(ref), path, poll_interval=poll, config=config,
                             trusted_key=trusted_key) for ref in references]
    for follower in followers:
        follower.start()
        click.echo(f"  following {follower.ref} every {poll:g} s")
    return followers
