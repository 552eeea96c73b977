//! Each page in the browser: what it shows, to whom, and what it never shows.

use fantoccini::Locator;

use crate::browser::{self, Browser};
use crate::lab::{Lab, SECRET, SECRET_VALUE};

async fn setup() -> Option<(Lab, Browser)> {
    let lab = Lab::start().await;
    let browser = browser::start(&lab.dir().join("screenshots")).await?;
    Some((lab, browser))
}

/// Opens `path`, checks the page has its landmarks and no secret value, saves a screenshot.
async fn visit(lab: &Lab, browser: &Browser, path: &str, shot: &str) -> String {
    let html = browser.open(&lab.url(path)).await;
    assert!(html.contains("<main id=\"main\">"), "{path}: no main landmark: {html}");
    assert!(!html.contains(SECRET_VALUE), "{path}: a secret value reached the page");
    assert!(!html.contains(SECRET), "{path}: a client secret reached the page");
    browser.shot(shot).await;
    html
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_renders_for_a_logged_in_owner_and_no_page_shows_a_secret() {
    let Some((lab, browser)) = setup().await else { return };
    let base = lab.url("");
    browser.log_in(&base, "alice", SECRET).await;

    let jobs = visit(&lab, &browser, "/jobs", "jobs").await;
    assert!(jobs.contains(&lab.running) && jobs.contains(&lab.cancelled));
    assert!(!jobs.contains(&lab.anonymous), "an anonymous job's id is its credential: not listed");

    let job = visit(&lab, &browser, &format!("/jobs/{}", lab.running), "job").await;
    assert!(job.contains("API_TOKEN"), "the secret's name is shown");
    assert!(job.contains("lab/token"), "the secret's store path is shown, as the API shows it");
    assert!(browser.text("#job-state").await.unwrap().contains("setup"));
    assert!(browser.client.find(Locator::Id("cancel")).await.is_ok(), "the owner may cancel");

    let agents = visit(&lab, &browser, "/agents", "agents").await;
    assert!(agents.contains("rack 7") && agents.contains("noprovision"));
    let agent = visit(&lab, &browser, "/agents/agent-1", "agent").await;
    assert!(agent.contains(&lab.running), "the agent's history links its job");
    let queues = visit(&lab, &browser, "/queues", "queues").await;
    assert!(queues.contains("/queues/lab"));
    let queue = visit(&lab, &browser, "/queues/lab", "queue").await;
    assert!(queue.contains("/agents/agent-1"));

    // Every table links to the next level: jobs → job, queue → agent.
    browser.open(&lab.url("/queues/lab")).await;
    browser.client.find(Locator::Css("a[href='/agents/agent-1']")).await.unwrap().click().await.unwrap();
    browser.wait_for_text("h1", "Agent agent-1").await;

    // Anonymous: the same rules as anonymous API callers.
    let anonymous = browser::start(&lab.dir().join("screenshots-anonymous")).await.unwrap();
    let page = visit(&lab, &anonymous, &format!("/jobs/{}", lab.running), "job-anonymous").await;
    assert!(page.contains("only its submitter and admins may access it"), "{page}");
    assert!(anonymous.client.find(Locator::Id("cancel")).await.is_err());
    let page = visit(&lab, &anonymous, &format!("/jobs/{}", lab.anonymous), "job-anonymous-own").await;
    assert!(page.contains(&lab.anonymous), "whoever knows an anonymous job's id sees it, as in the API");
    anonymous.stop().await;
    browser.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_narrow_the_jobs_list() {
    let Some((lab, browser)) = setup().await else { return };
    browser.log_in(&lab.url(""), "bob", SECRET).await;
    browser.open(&lab.url("/jobs")).await;
    let form = browser.client.form(Locator::Css("form.filters")).await.unwrap();
    browser.client.find(Locator::Css("select[name=state]")).await.unwrap().select_by_label("cancelled").await.unwrap();
    form.submit().await.unwrap();
    browser.wait_for_text("p.count", "1 job").await;
    let html = browser.client.source().await.unwrap();
    assert!(html.contains(&lab.cancelled) && !html.contains(&lab.running));
    browser.shot("jobs-filtered").await;

    for (query, shows, hides) in [
        ("queue=lab", &lab.running, &lab.cancelled),
        ("queue=other", &lab.cancelled, &lab.running),
        ("tag=nightly", &lab.running, &lab.cancelled),
        ("state=active", &lab.running, &lab.cancelled),
        ("submitter=bob", &lab.cancelled, &lab.running),
        (&format!("q={}", &lab.running[..8]), &lab.running, &lab.cancelled),
    ] {
        let html = browser.open(&lab.url(&format!("/jobs?{query}"))).await;
        assert!(html.contains(shows.as_str()) && !html.contains(hides.as_str()), "{query}");
    }
    browser.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_log_shows_lines_as_the_agent_posts_them() {
    let Some((lab, browser)) = setup().await else { return };
    lab.post_output(0, "first line before the page opened\n").await;
    browser.log_in(&lab.url(""), "alice", SECRET).await;
    browser.open(&lab.url(&format!("/jobs/{}", lab.running))).await;
    browser.wait_for_text("#log", "first line before the page opened").await;
    lab.post_output(1, "second line, live\n").await;
    browser.wait_for_text("#log", "second line, live").await;
    lab.post_output(2, "third line, live\n").await;
    browser.wait_for_text("#log", "third line, live").await;
    let log = browser.text("#log").await.unwrap();
    assert_eq!(log.matches("first line").count(), 1, "a line shown once: {log}");
    assert_eq!(log.matches("== setup").count(), 1, "one marker per phase: {log}");
    browser.shot("job-live").await;
    browser.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_works_for_the_owner_and_is_absent_for_others() {
    let Some((lab, browser)) = setup().await else { return };
    let job = lab.url(&format!("/jobs/{}", lab.running));
    browser.log_in(&lab.url(""), "bob", SECRET).await;
    let html = browser.open(&job).await;
    assert!(html.contains("belongs to another client"), "{html}");
    assert!(browser.client.find(Locator::Id("cancel")).await.is_err());
    browser.stop().await;

    let browser = browser::start(&lab.dir().join("screenshots-owner")).await.unwrap();
    browser.log_in(&lab.url(""), "alice", SECRET).await;
    browser.open(&job).await;
    browser.client.find(Locator::Id("cancel")).await.unwrap().click().await.unwrap();
    browser.wait_for_text("#job-state", "cancelled").await;
    let stored = lab.state.store.get_job(&lab.running).await.unwrap().unwrap();
    assert_eq!(stored.state, "cancelled");
    assert!(browser.client.find(Locator::Id("cancel")).await.is_err(), "a finished job offers no cancel");
    browser.stop().await;
}
