//! ARM handlers for `Strata.Compute/images` (the flow is drawn in `compute::images`): PUT
//! declares the upload, `POST …/upload` streams the bytes in (admitted by the dispatcher before
//! the body is read, see [`begin_upload`]), and the VM side resolves an image reference (read
//! access checked).

use std::path::PathBuf;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use strata_compute::import::{Format, ImportError, ImportLimits};
use strata_store::{Op, Precondition};
use strata_types::{ApiError, ResourceBody, ResourceId};

use super::{Built, load, new_doc, parse_props};
use crate::app::App;
use crate::compute::images::{ImageContent, is_digest};
use crate::context::Ctx;
use crate::dispatch::{self, Admitted, Incoming, Reply, Target};
use crate::docs::Doc;
use crate::kinds::Kind;
use strata_compute::import::sha256_file;

/// The only source so far: bytes uploaded to `…/upload`.
const UPLOAD: &str = "Upload";
const PENDING: &str = "PendingUpload";
const SUCCEEDED: &str = "Succeeded";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ImageInput {
    #[serde(default)]
    source: Option<SourceInput>,
    // Read-only, accepted and ignored so that GET-modify-PUT works.
    #[serde(default)]
    provisioning_state: Option<IgnoredAny>,
    #[serde(default)]
    format: Option<IgnoredAny>,
    #[serde(default)]
    size_bytes: Option<IgnoredAny>,
    #[serde(default)]
    virtual_size_bytes: Option<IgnoredAny>,
    #[serde(default)]
    sha256: Option<IgnoredAny>,
    #[serde(default)]
    uploaded_at: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SourceInput {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    upload_size_bytes: Option<u64>,
    #[serde(default)]
    sha256: Option<String>,
}

/// A checked `source`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Source {
    format: Format,
    upload_size_bytes: u64,
    sha256: Option<String>,
}

impl Source {
    fn to_json(&self) -> Value {
        json!({
            "type": UPLOAD,
            "format": self.format.as_str(),
            "uploadSizeBytes": self.upload_size_bytes,
            "sha256": self.sha256,
        })
    }

    fn of_doc(doc: &Doc) -> Option<Source> {
        let s = doc.properties.get("source")?;
        Some(Source {
            format: Format::parse(s.get("format")?.as_str()?)?,
            upload_size_bytes: s.get("uploadSizeBytes")?.as_u64()?,
            sha256: s.get("sha256").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

fn check_source(input: Option<SourceInput>, max_upload: u64) -> Result<Source, ApiError> {
    let Some(s) = input else {
        return Err(ApiError::bad_request(
            "SourceRequired",
            "properties.source is required: {\"type\": \"Upload\", \"format\": \"raw\" or \"qcow2\", \"uploadSizeBytes\": N}",
        ));
    };
    if let Some(k) = s.kind.as_deref()
        && !k.eq_ignore_ascii_case(UPLOAD)
    {
        return Err(ApiError::bad_request(
            "InvalidImageSource",
            format!(
                "source.type '{}' is not supported: use {UPLOAD} (then POST the bytes to …/upload)",
                k.chars().take(40).collect::<String>()
            ),
        ));
    }
    let format = s
        .format
        .as_deref()
        .ok_or_else(|| {
            ApiError::bad_request("ImageFormatRequired", "source.format is required: raw or qcow2")
        })
        .and_then(|f| {
            Format::parse(f).ok_or_else(|| {
                ApiError::bad_request(
                    "InvalidImageFormat",
                    format!(
                        "source.format '{}' is not supported: use raw or qcow2 (convert others with qemu-img convert -O qcow2)",
                        f.chars().take(40).collect::<String>()
                    ),
                )
            })
        })?;
    let size = s.upload_size_bytes.ok_or_else(|| {
        ApiError::bad_request(
            "UploadSizeRequired",
            "source.uploadSizeBytes is required: the exact length of the file to upload",
        )
    })?;
    if size == 0 || size > max_upload {
        return Err(ApiError::bad_request(
            "InvalidUploadSize",
            format!("source.uploadSizeBytes must be 1 to {max_upload}, got {size}"),
        ));
    }
    let sha256 = match s.sha256 {
        Some(d) => {
            let d = d.to_ascii_lowercase();
            if !is_digest(&d) {
                return Err(ApiError::bad_request(
                    "InvalidDigest",
                    "source.sha256 must be the file's SHA-256 as 64 hex digits",
                ));
            }
            Some(d)
        }
        None => None,
    };
    Ok(Source {
        format,
        upload_size_bytes: size,
        sha256,
    })
}

/// PUT: declares an image and its upload (PendingUpload), or keeps an existing one (tags may
/// change; the source may not).
pub fn build_image(
    ctx: &Ctx<'_>,
    id: &ResourceId,
    existing: Option<&Doc>,
    body: ResourceBody,
) -> Result<Built, ApiError> {
    let input: ImageInput = parse_props(body.properties)?;
    let _ = (
        input.provisioning_state,
        input.format,
        input.size_bytes,
        input.virtual_size_bytes,
        input.sha256,
        input.uploaded_at,
    );
    let source = check_source(input.source, ctx.app.images.config().max_upload_bytes)?;
    if let Some(doc) = existing {
        if Source::of_doc(doc).as_ref() != Some(&source) {
            return Err(ApiError::conflict(
                "PropertyChangeNotAllowed",
                "an image's source cannot change; create another image",
            ));
        }
        let mut doc = doc.clone();
        doc.system_data = new_doc(ctx, id, Kind::Image, Some(&doc), Value::Null).system_data;
        return Ok(Built {
            doc,
            extra_ops: vec![],
            reveal: None,
        });
    }
    let props = json!({
        "source": source.to_json(),
        "provisioningState": PENDING,
        "format": Value::Null,
        "sizeBytes": Value::Null,
        "virtualSizeBytes": Value::Null,
        "sha256": Value::Null,
        "uploadedAt": Value::Null,
    });
    Ok(Built {
        doc: new_doc(ctx, id, Kind::Image, None, props),
        extra_ops: vec![],
        reveal: None,
    })
}

/// An admitted upload: the server streams the body to `path`, then calls [`finish_upload`].
pub struct UploadTicket {
    admitted: Admitted,
    id: ResourceId,
    request_id: String,
    client_ip: String,
    /// Where the bytes go while they arrive.
    pub path: PathBuf,
    /// How many bytes to accept (the declared size, which `Content-Length` must equal).
    pub length: u64,
}

/// Steps 1-4 of the dispatcher (authenticate, rate limit, route, authorize `images/write`) for
/// `POST …/images/NAME/upload`, then the checks that need no body: the image exists and awaits
/// its upload, and `Content-Length` is the declared size. Refusals are audited as any failed
/// write is.
pub fn begin_upload(
    app: &App,
    req: &Incoming<'_>,
    request_id: &str,
    content_length: Option<u64>,
) -> Result<UploadTicket, Box<Reply>> {
    let admitted =
        dispatch::admit(app, req, request_id).map_err(|f| Box::new(dispatch::Failure::reply(f)))?;
    let ctx = admitted.context(app, &req.client_ip, request_id);
    let checked = (|| {
        let Target::PostAction {
            id,
            kind: Kind::Image,
            ..
        } = &admitted.route.target
        else {
            return Err(ApiError::bad_request(
                "InvalidAction",
                "uploads go to …/providers/Strata.Compute/images/NAME/upload",
            ));
        };
        let (_, doc) = load(&ctx, id)?.ok_or_else(|| ApiError::not_found(id.as_str()))?;
        let source = pending_source(&doc)?;
        let length = content_length.ok_or_else(|| {
            ApiError::new(
                411,
                "LengthRequired",
                format!(
                    "send the image with Content-Length: {} (chunked uploads are not accepted)",
                    source.upload_size_bytes
                ),
            )
        })?;
        if length != source.upload_size_bytes {
            return Err(ApiError::bad_request(
                "UploadSizeMismatch",
                format!(
                    "the upload is {length} bytes but the image declares source.uploadSizeBytes {}; upload exactly that file or create another image",
                    source.upload_size_bytes
                ),
            ));
        }
        Ok((id.clone(), length))
    })();
    match checked {
        Ok((id, length)) => Ok(UploadTicket {
            id,
            request_id: request_id.to_owned(),
            client_ip: req.client_ip.clone(),
            path: app.images.incoming("upload"),
            length,
            admitted,
        }),
        Err(e) => {
            dispatch::audit_failure(&ctx, admitted.route.verb, &Err::<(), _>(e.clone()));
            Err(Box::new(Reply::error(&e)))
        }
    }
}

fn pending_source(doc: &Doc) -> Result<Source, ApiError> {
    if doc.prop_str("provisioningState") != Some(PENDING) {
        return Err(ApiError::conflict(
            "ImageAlreadyUploaded",
            "the image already has its content; create another image to import another file",
        ));
    }
    Source::of_doc(doc).ok_or_else(|| {
        tracing::error!(image = %doc.id, "image document has no readable source");
        ApiError::internal()
    })
}

/// What arrived: `Ok((bytes, sha256))`, or why the stream broke.
pub type Received = Result<(u64, String), ApiError>;

/// After the body arrived (or did not): checks it against the declaration, validates and
/// converts it (`strata_compute::import`), stores it by digest and marks the image Succeeded.
/// The uploaded file is removed whatever happens.
pub fn finish_upload(app: &App, ticket: UploadTicket, received: Received) -> Reply {
    let ctx = ticket
        .admitted
        .context(app, &ticket.client_ip, &ticket.request_id);
    let result = finish(&ctx, &ticket, received);
    let _ = std::fs::remove_file(&ticket.path);
    dispatch::audit_failure(&ctx, ticket.admitted.route.verb, &result);
    result.unwrap_or_else(|e| Reply::error(&e))
}

fn finish(ctx: &Ctx<'_>, ticket: &UploadTicket, received: Received) -> Result<Reply, ApiError> {
    let (length, upload_sha256) = received?;
    let id = &ticket.id;
    let (rec, doc) = load(ctx, id)?.ok_or_else(|| ApiError::not_found(id.as_str()))?;
    let source = pending_source(&doc)?;
    if length != source.upload_size_bytes {
        return Err(ApiError::bad_request(
            "UploadSizeMismatch",
            format!(
                "{length} bytes arrived, {} were declared; upload again",
                source.upload_size_bytes
            ),
        ));
    }
    if let Some(want) = &source.sha256
        && *want != upload_sha256
    {
        return Err(ApiError::bad_request(
            "UploadDigestMismatch",
            format!(
                "the upload's SHA-256 is {upload_sha256}, not the declared {want}: the file changed or was damaged in transit; upload again"
            ),
        ));
    }
    let images = &ctx.app.images;
    let limits = ImportLimits {
        max_virtual_bytes: images.config().max_virtual_bytes,
        max_output_bytes: images.config().max_upload_bytes.saturating_add(64 << 20),
    };
    let converted = images.incoming("qcow2");
    let started = std::time::Instant::now();
    let imported = strata_compute::import::import(&ticket.path, source.format, &converted, &limits)
        .map_err(|e| match e {
            ImportError::Refused(why) => ApiError::bad_request(
                "InvalidImage",
                format!("the {} image was refused: {why}", source.format.as_str()),
            ),
            other => {
                crate::app::log_chain("image import failed", &other);
                ApiError::internal()
            }
        })?;
    let result = (|| {
        let (sha256, size) = sha256_file(&converted).map_err(|e| {
            crate::app::log_chain("cannot hash the converted image", &e);
            ApiError::internal()
        })?;
        tracing::info!(image = %id, %sha256, bytes = size, virtual_bytes = imported.virtual_size,
            secs = started.elapsed().as_secs_f64(), "image imported");
        let mut doc = doc.clone();
        if let Some(o) = doc.properties.as_object_mut() {
            let s = o.entry("source").or_insert_with(|| json!({}));
            s["sha256"] = json!(upload_sha256);
            o.insert("provisioningState".into(), json!(SUCCEEDED));
            o.insert("format".into(), json!("qcow2"));
            o.insert("sizeBytes".into(), json!(size));
            o.insert("virtualSizeBytes".into(), json!(imported.virtual_size));
            o.insert("sha256".into(), json!(sha256));
            o.insert(
                "uploadedAt".into(),
                json!(strata_types::time::now_rfc3339()),
            );
        }
        doc.system_data = new_doc(ctx, id, Kind::Image, Some(&doc), Value::Null).system_data;
        // Placing the blob and committing the document that names it happen under the store's
        // lock, so a garbage collection in between cannot take the blob away.
        let _held = images.lock();
        images.place(&converted, &sha256).map_err(|e| {
            crate::app::log_chain("cannot store the image", &e);
            ApiError::internal()
        })?;
        let committed = ctx.commit(
            vec![Op::Put {
                key: rec.key.clone(),
                rtype: rec.rtype.clone(),
                parent: rec.parent.clone(),
                body: doc.to_json()?,
                pre: Precondition::Revision(rec.revision),
            }],
            200,
            json!({ "id": id.to_string(), "action": "upload", "sha256": sha256,
                    "uploadSha256": upload_sha256, "bytes": length }),
            false,
        );
        match committed {
            Ok(c) => super::doc_reply(200, &doc, c.revisions.first().copied().unwrap_or(0), None),
            Err(e) => {
                drop(_held);
                // Nothing names the blob if the commit failed (unless another image does).
                images.collect_garbage_logged(ctx.app.store.as_ref());
                Err(e)
            }
        }
    })();
    let _ = std::fs::remove_file(&converted);
    result
}

/// A new VM's image reference: the image exists, the caller may read it (else 404, as if it
/// did not exist), and it has its content. Returns what the VM records and the write that
/// keeps the image from changing under the VM's commit.
pub fn resolve_for_vm(ctx: &Ctx<'_>, image: &str) -> Result<(ImageContent, Op), ApiError> {
    let id = ResourceId::parse(image).map_err(|e| {
        ApiError::bad_request(
            "InvalidImageReference",
            format!("storageProfile.imageReference.id: {e}"),
        )
    })?;
    let not_found = || {
        ApiError::new(
            404,
            "ImageNotFound",
            format!(
                "image '{id}' was not found, or '{}' may not read it (using an image in a VM needs {} on it)",
                ctx.caller.name,
                Kind::Image.action("read")
            ),
        )
    };
    let read = Kind::Image.action("read");
    if !ctx
        .app
        .decide(&ctx.caller, &read, id.key(), false)
        .is_allowed()
    {
        return Err(not_found());
    }
    let (rec, doc) = load(ctx, &id)?.ok_or_else(not_found)?;
    if doc.prop_str("provisioningState") != Some(SUCCEEDED) {
        return Err(ApiError::conflict(
            "ImageNotReady",
            format!(
                "image '{id}' has no content yet ({}); upload it first: strata image import",
                doc.prop_str("provisioningState").unwrap_or("unknown")
            ),
        ));
    }
    let content = ImageContent::of_image(&doc).ok_or_else(|| {
        tracing::error!(image = %id, "Succeeded image document lacks its content fields");
        ApiError::internal()
    })?;
    let keep = Op::Assert {
        key: rec.key,
        pre: Precondition::Revision(rec.revision),
    };
    Ok((content, keep))
}
