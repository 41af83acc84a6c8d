//! The browser support itself (tests/support/browser.rs), on tiny pages served from 127.0.0.1:
//! a real headless Chromium loads them, renders their text, runs their scripts on a click, sees
//! the colour scheme it is given, lays them out 375 CSS pixels wide, and takes screenshots. Its
//! processes end with it, also when the test panics.

mod support;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Duration;

use axum::response::Html;
use axum::routing::get;
use serde_json::json;
use support::browser::{Browser, Options, screenshot_dir};

const STYLE: &str = "
body { margin: 0; font: 16px sans-serif; color: rgb(17, 17, 17); background: rgb(255, 255, 255); }
@media (prefers-color-scheme: dark) {
  body { color: rgb(238, 238, 238); background: rgb(16, 16, 16); }
}
";

fn page(body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>test</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )
}

/// The pages, on 127.0.0.1, served by a runtime of their own for as long as the test process.
fn serve() -> String {
    let home = page(
        r#"<h1 id="title">Hello, Hermes</h1>
<p id="shout" style="text-transform: uppercase">rendered text</p>
<p id="hidden" style="display: none">not shown</p>
<button id="go">Add</button>
<ul id="list"></ul>
<p>Count: <span id="count">0</span></p>
<script>
document.getElementById("go").addEventListener("click", () => setTimeout(() => {
  const li = document.createElement("li");
  li.className = "added";
  li.textContent = "added " + document.querySelectorAll(".added").length;
  document.getElementById("list").append(li);
  document.getElementById("count").textContent = document.querySelectorAll(".added").length;
}, 100));
</script>"#,
    );
    let fits = page(
        r#"<main style="padding: 8px">
<p>A paragraph of words that wraps in a narrow viewport rather than widening the page.</p>
<div style="width: 100%; height: 40px; background: rgb(200, 50, 50)"></div>
</main>"#,
    );
    let wide = page(
        r#"<main><table><tr><td style="min-width: 600px">a wide cell</td></tr></table></main>"#,
    );
    let app = axum::Router::new()
        .route("/", get(move || async move { Html(home) }))
        .route("/fits", get(move || async move { Html(fits) }))
        .route("/wide", get(move || async move { Html(wide) }));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app).await
        })
    });
    url
}

fn dark_query(b: &Browser) -> bool {
    b.eval(
        "return matchMedia('(prefers-color-scheme: dark)').matches;",
        vec![],
    ) == json!(true)
}

fn body_colours(b: &Browser) -> (String, String) {
    let v = b.eval(
        "const s = getComputedStyle(document.body); return [s.color, s.backgroundColor];",
        vec![],
    );
    (
        v[0].as_str().expect("color").to_owned(),
        v[1].as_str().expect("background").to_owned(),
    )
}

#[test]
fn a_page_loads_its_text_is_read_and_a_click_changes_it() {
    let base = serve();
    let b = Browser::start(Options::default());
    b.goto(&format!("{base}/"));
    assert_eq!(b.url(), format!("{base}/"));
    b.wait_for("#title", Duration::from_secs(10));
    assert_eq!(b.text("#title"), "Hello, Hermes");
    // The rendered text, as a person sees it: after CSS, without what is hidden.
    assert_eq!(b.text("#shout"), "RENDERED TEXT");
    assert_eq!(b.texts("#hidden"), vec![String::new()]);
    assert_eq!(
        b.eval(
            "return document.getElementById(arguments[0]).textContent;",
            vec![json!("hidden")]
        ),
        json!("not shown")
    );

    assert!(b.texts(".added").is_empty());
    b.click("#go");
    b.wait_for("li.added", Duration::from_secs(10));
    assert_eq!(b.text("li.added"), "added 0");
    b.click("#go");
    b.wait_until(
        "document.querySelectorAll('.added').length === 2",
        Duration::from_secs(10),
    );
    assert_eq!(b.texts("li.added"), vec!["added 0", "added 1"]);
    assert_eq!(b.text("#count"), "2");

    // The escape hatch: fantoccini itself.
    let title = b.run(|c| async move { c.title().await.expect("title") });
    assert_eq!(title, "test");

    // A bounded wait names what it waited for and where.
    let missed = catch_unwind(AssertUnwindSafe(|| {
        b.wait_for("#never", Duration::from_millis(300));
    }))
    .expect_err("no #never on the page");
    let message = missed
        .downcast_ref::<String>()
        .expect("a formatted message");
    assert!(
        message.contains("\"#never\"") && message.contains(&format!("{base}/")),
        "{message}"
    );

    // Only loopback.
    for url in [
        "http://example.com/",
        "https://10.0.0.1/",
        "http://127.0.0.1@example.com/",
    ] {
        assert!(
            catch_unwind(AssertUnwindSafe(|| b.goto(url))).is_err(),
            "{url} was visited"
        );
    }
}

#[test]
fn dark_mode_applies_to_media_queries_and_css() {
    let base = serve();
    let b = Browser::start(Options {
        dark: true,
        ..Options::default()
    });
    b.goto(&format!("{base}/"));
    assert!(dark_query(&b), "prefers-color-scheme: dark");
    assert_eq!(
        body_colours(&b),
        (
            "rgb(238, 238, 238)".to_owned(),
            "rgb(16, 16, 16)".to_owned()
        )
    );
    let shot = b.screenshot("browser-support-dark");
    assert!(std::fs::metadata(&shot).expect("dark screenshot").len() > 2000);
    // It stays across navigations, and can be switched off on the page.
    b.goto(&format!("{base}/fits"));
    assert!(dark_query(&b));
    b.set_dark(false);
    assert!(!dark_query(&b));
    assert_eq!(body_colours(&b).1, "rgb(255, 255, 255)");
}

#[test]
fn light_mode_is_the_default() {
    let base = serve();
    let b = Browser::start(Options::default());
    b.goto(&format!("{base}/"));
    assert!(!dark_query(&b), "prefers-color-scheme: light");
    assert!(
        b.eval(
            "return matchMedia('(prefers-color-scheme: light)').matches;",
            vec![]
        ) == json!(true)
    );
    assert_eq!(
        body_colours(&b),
        (
            "rgb(17, 17, 17)".to_owned(),
            "rgb(255, 255, 255)".to_owned()
        )
    );
    b.set_dark(true);
    assert!(dark_query(&b));
    assert_eq!(body_colours(&b).1, "rgb(16, 16, 16)");
}

#[test]
fn a_phone_viewport_is_375_css_pixels_and_overflow_is_caught() {
    let base = serve();
    let b = Browser::start(Options::phone());
    b.goto(&format!("{base}/fits"));
    let size = b.eval(
        "return [innerWidth, innerHeight, document.documentElement.clientWidth, devicePixelRatio];",
        vec![],
    );
    assert_eq!(size, json!([375, 812, 375, 1]));
    assert_eq!(b.horizontal_overflow(), None);
    b.assert_fits_width();

    b.goto(&format!("{base}/wide"));
    assert_eq!(b.eval("return innerWidth;", vec![]), json!(375));
    let (scroll, inner) = b.horizontal_overflow().expect("the wide page overflows");
    assert!(scroll >= 600 && inner == 375, "{scroll} {inner}");
    let caught = catch_unwind(AssertUnwindSafe(|| b.assert_fits_width()))
        .expect_err("the wide page does not fit");
    let message = caught.downcast_ref::<String>().expect("message");
    assert!(
        message.contains("/wide") && message.contains("innerWidth 375"),
        "{message}"
    );

    // Back to a desktop width and down again, on the same page.
    b.set_size(1024, 700);
    assert_eq!(b.eval("return innerWidth;", vec![]), json!(1024));
    assert_eq!(b.horizontal_overflow(), None);
    b.set_size(375, 700);
    assert!(b.horizontal_overflow().is_some());
}

#[test]
fn a_screenshot_is_a_png_file() {
    let base = serve();
    let b = Browser::start(Options::phone());
    b.goto(&format!("{base}/fits"));
    b.wait_for("main", Duration::from_secs(10));
    let path = b.screenshot("browser-support-phone");
    assert_eq!(path, screenshot_dir().join("browser-support-phone.png"));
    let png = std::fs::read(&path).expect("screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert!(png.len() > 2000, "{} bytes", png.len());
    // The IHDR chunk: width and height of the picture, the 375 x 812 viewport.
    let width = u32::from_be_bytes(png[16..20].try_into().expect("4 bytes"));
    let height = u32::from_be_bytes(png[20..24].try_into().expect("4 bytes"));
    assert_eq!((width, height), (375, 812));
}

/// Processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

#[test]
fn no_process_is_left_when_a_test_panics() {
    let base = serve();
    let (tx, rx) = std::sync::mpsc::channel();
    let test = std::thread::spawn(move || {
        let b = Browser::start(Options::default());
        b.goto(&format!("{base}/"));
        tx.send(b.dir().to_owned()).expect("send");
        assert!(
            processes_with(&b.dir().display().to_string()).len() >= 2,
            "chromedriver and Chromium run"
        );
        panic!("a failing UI test");
    });
    assert!(test.join().is_err(), "the thread panicked");
    let dir = rx.recv().expect("the browser's directory");
    let left = processes_with(&dir.display().to_string());
    assert!(left.is_empty(), "left running: {left:#?}");
    assert!(!Path::new(&dir).exists(), "{} is removed", dir.display());
}
