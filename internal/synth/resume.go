package synth

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
)

// The résumés are made of the pieces below. Schools and companies come in tiers
// and careers in tracks, so the candidates spread over the rubric's ratings and
// recommendations instead of all looking alike.

var firstNames = []string{
	"Min Thet", "Aisha", "Carlos", "Priya", "Wei", "Olga", "Tunde", "Hannah", "Mateo", "Yuki",
	"Fatima", "Liam", "Sofia", "Dmitri", "Grace", "Arjun", "Chloe", "Kwame", "Elena", "Jamal",
	"Mei", "Noah", "Leila", "Oscar", "Ingrid", "Ravi", "Zara", "Tomas", "Amara", "Ethan",
}

var lastNames = []string{
	"K", "Okafor", "Nguyen", "Garcia", "Patel", "Kowalski", "Chen", "Haddad", "Johansson", "Silva",
	"Tanaka", "Mensah", "Ivanova", "Murphy", "Rahman", "Schmidt", "Lopez", "Kim", "Adeyemi", "Rossi",
	"Novak", "Singh", "Dubois", "Park", "Costa", "Brennan", "Farouk", "Lindqvist", "Moreno", "Cohen",
}

var locations = []string{
	"Seattle, WA", "New York, NY", "San Francisco, CA", "Austin, TX", "Boston, MA", "Chicago, IL",
	"Denver, CO", "Atlanta, GA", "Toronto, ON", "Pittsburgh, PA", "Raleigh, NC", "Remote (US)",
}

// Schools by tier, best first.
var schools = [][]string{
	{"Massachusetts Institute of Technology", "Stanford University", "Carnegie Mellon University",
		"University of California, Berkeley", "California Institute of Technology", "Princeton University"},
	{"University of Washington", "Georgia Institute of Technology", "University of Illinois Urbana-Champaign",
		"University of Michigan", "University of Texas at Austin", "Cornell University", "University of Waterloo"},
	{"Arizona State University", "San Jose State University", "University of Central Florida",
		"Portland State University", "Rutgers University", "University of North Texas"},
	{"Lakeshore Community College", "App Academy (coding bootcamp)", "General Assembly (coding bootcamp)"},
}

var technicalFields = []string{"Computer Science", "Electrical Engineering", "Computer Engineering", "Mathematics", "Physics"}
var otherFields = []string{"Economics", "Business Administration", "Psychology", "Communications", "Biology"}

// Companies by tier, best first.
var companies = [][]string{
	{"Google", "Microsoft", "Bloomberg", "Stripe", "Meta", "Apple", "Jane Street", "Netflix", "Databricks"},
	{"Atlassian", "Shopify", "Twilio", "Datadog", "Cloudflare", "Intuit", "Salesforce", "Airbnb", "Square"},
	{"Brightline Logistics", "Harbor Health Systems", "Summit Credit Union", "Northwind Traders",
		"Midwest Insurance Group", "Loopwise (Series A startup)", "Quillfeather (seed-stage startup)", "Acme Retail Co."},
}

// A track is a kind of career: its title ladder and the work its bullets describe.
type track struct {
	titles     []string
	summary    string
	bullet     func(rng *rand.Rand) string
	skills     []string
	otherField int // percent of candidates whose degree is not technical
}

var tracks = []track{
	{ // software engineers, most candidates
		titles: []string{"Software Engineer Intern", "Software Engineer", "Software Engineer II",
			"Senior Software Engineer", "Staff Software Engineer", "Principal Engineer"},
		summary: "Software engineer with %d years of experience in %s.",
		bullet:  engineeringBullet,
		skills: []string{"Go", "Python", "Java", "TypeScript", "C++", "Rust", "Kotlin", "SQL", "PostgreSQL",
			"Redis", "Kafka", "Kubernetes", "Docker", "AWS", "GCP", "Terraform", "React", "gRPC", "Spark", "Airflow"},
	},
	{ // next to engineering: code is part of the job, not all of it
		titles: []string{"Data Analyst Intern", "Data Analyst", "QA Engineer", "Data Scientist",
			"Solutions Engineer", "Technical Program Manager"},
		summary: "Technical professional with %d years of experience, recently in %s.",
		bullet:  adjacentBullet,
		skills: []string{"SQL", "Python", "R", "Tableau", "Looker", "Excel", "Selenium", "pytest", "Postman",
			"Jira", "dbt", "Snowflake", "A/B testing", "REST APIs", "Bash"},
		otherField: 50,
	},
	{ // outside engineering
		titles: []string{"Operations Intern", "Operations Analyst", "Account Executive", "Project Manager",
			"Senior Project Manager", "Director of Operations"},
		summary: "Business professional with %d years of experience, looking to move into %s.",
		bullet:  businessBullet,
		skills: []string{"Excel", "Salesforce", "HubSpot", "Jira", "Tableau", "Budgeting", "Negotiation",
			"Vendor management", "Public speaking", "Process improvement", "Python (beginner)"},
		otherField: 70,
	},
}

var areas = []string{"backend systems", "distributed systems", "mobile apps", "data infrastructure",
	"developer tooling", "payments and fintech", "machine learning platforms", "web frontends"}

var (
	engVerbs   = []string{"Built", "Designed", "Rewrote", "Led the migration of", "Scaled", "Owned", "Shipped", "Optimized", "Automated the rollout of"}
	engSystems = []string{"the order-routing service", "a real-time fraud detection pipeline", "the internal feature-flag platform",
		"a GraphQL gateway for the mobile apps", "the search indexing workers", "a Kafka-based event bus",
		"the billing reconciliation jobs", "an on-call alerting system", "the CI build farm",
		"a recommendation ranking service", "the customer data export API", "a distributed rate limiter"}
	engTech    = []string{"Go", "Java", "Python", "TypeScript", "C++", "Rust", "Kotlin", "Scala"}
	engInfra   = []string{"on Kubernetes", "with PostgreSQL", "with Redis", "on AWS", "on GCP", "with gRPC"}
	engImpacts = []string{"cutting p99 latency by %d%%", "handling %d,000 requests per second at peak",
		"reducing cloud spend by $%d,000 a year", "serving %d million monthly users",
		"cutting build times by %d%%", "eliminating %d%% of manual on-call pages"}

	adjActions = []string{"Built Looker dashboards for the sales leadership team", "Wrote SQL and Python reports on customer churn",
		"Automated regression test suites with Selenium and pytest", "Ran A/B test analyses for the checkout flow",
		"Built customer proof-of-concept integrations against our REST API", "Ran the quarterly data quality audit",
		"Designed a forecasting model for warehouse demand", "Coordinated release planning across four engineering teams"}
	adjImpacts = []string{"saving analysts %d hours a week", "catching %d release-blocking bugs a quarter",
		"raising conversion by %d%%", "supporting %d enterprise deals", "cutting report turnaround by %d%%"}

	bizActions = []string{"Managed quarterly vendor reviews across our suppliers", "Grew the regional sales pipeline",
		"Prepared weekly KPI reports in Excel", "Ran onboarding for new enterprise accounts", "Managed the help desk queue for the office",
		"Negotiated contract renewals with logistics partners", "Led a cross-team process improvement program"}
	bizImpacts = []string{"raising renewal rates by %d%%", "saving %d hours a month", "growing revenue by %d%%",
		"closing %d new accounts", "cutting costs by %d%%"}
)

func pick[T any](rng *rand.Rand, list []T) T { return list[rng.IntN(len(list))] }

func engineeringBullet(rng *rand.Rand) string {
	if rng.IntN(8) == 0 {
		return fmt.Sprintf("Mentored %d junior engineers and ran the team's interview loop.", 2+rng.IntN(5))
	}
	return fmt.Sprintf("%s %s in %s %s, %s.", pick(rng, engVerbs), pick(rng, engSystems), pick(rng, engTech),
		pick(rng, engInfra), fmt.Sprintf(pick(rng, engImpacts), 10+rng.IntN(80)))
}

func adjacentBullet(rng *rand.Rand) string {
	return fmt.Sprintf("%s, %s.", pick(rng, adjActions), fmt.Sprintf(pick(rng, adjImpacts), 3+rng.IntN(40)))
}

func businessBullet(rng *rand.Rand) string {
	return fmt.Sprintf("%s, %s.", pick(rng, bizActions), fmt.Sprintf(pick(rng, bizImpacts), 3+rng.IntN(40)))
}

var months = []string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// lastYear ends every timeline: fixed rather than read from the clock, so the
// same seed writes the same résumés every day.
const lastYear = 2025

// role is one job on a résumé.
type role struct {
	header  string
	bullets []string
}

// writeResume writes one candidate's résumé, adding bullets to its roles until
// it is about budget bytes long.
func writeResume(buf *bytes.Buffer, rng *rand.Rand, budget int) {
	first, last := pick(rng, firstNames), pick(rng, lastNames)
	tr := tracks[weighted(rng, 70, 20, 10)]

	// Education: the school's tier leans towards the career's.
	gradYear := 2005 + rng.IntN(lastYear-2005-2)
	schoolTier := weighted(rng, 25, 35, 30, 10)
	field := pick(rng, technicalFields)
	if rng.IntN(100) < tr.otherField {
		field = pick(rng, otherFields)
	}
	degrees := []string{fmt.Sprintf("- %s: BS, %s (%d-%d)", pick(rng, schools[schoolTier]), field, gradYear-4, gradYear)}
	if schoolTier == 3 {
		degrees[0] = fmt.Sprintf("- %s: Certificate, Software Development (%d)", pick(rng, schools[3]), gradYear)
	} else if rng.IntN(4) == 0 {
		degrees = append([]string{fmt.Sprintf("- %s: MS, %s (%d-%d)", pick(rng, schools[max(0, schoolTier-rng.IntN(2))]),
			pick(rng, technicalFields), gradYear, gradYear+2)}, degrees...)
		gradYear += 2
	}

	roles := career(rng, tr, gradYear)

	fmt.Fprintf(buf, "Please evaluate this candidate.\n\nName: %s %s\nLocation: %s\nEmail: %s.%s@example.com\n\n",
		first, last, pick(rng, locations), strings.ToLower(strings.ReplaceAll(first, " ", "")), strings.ToLower(last))
	fmt.Fprintf(buf, "Summary: "+tr.summary+"\n\nEducation\n%s\n\nExperience\n",
		max(1, lastYear-gradYear), pick(rng, areas), strings.Join(degrees, "\n"))
	skillLine := "\nSkills: " + strings.Join(pickSkills(rng, tr.skills), ", ") + "\n"

	// Grow the bullets, most recent role first, until the résumé reaches its budget.
	size := buf.Len() + len(skillLine)
	for _, r := range roles {
		size += len(r.header) + 1
	}
	for full := false; size < budget && !full; {
		full = true
		for i := range roles {
			if size >= budget {
				break
			}
			if len(roles[i].bullets) < 8 {
				b := tr.bullet(rng)
				roles[i].bullets = append(roles[i].bullets, b)
				size += len(b) + 3 // "- " and "\n"
				full = false
			}
		}
	}
	for _, r := range roles {
		buf.WriteString(r.header)
		buf.WriteByte('\n')
		for _, b := range r.bullets {
			buf.WriteString("- ")
			buf.WriteString(b)
			buf.WriteByte('\n')
		}
	}
	buf.WriteString(skillLine)
}

// career lays out the candidate's jobs from graduation to now, most recent first,
// at most five of them. Each move usually climbs the track's ladder; some stall
// or step back, which the trajectory rating should notice.
func career(rng *rand.Rand, tr track, gradYear int) []role {
	type job struct {
		title, company     string
		fromMonth, toMonth int // months since year 0; toMonth 0: present
	}
	companyTier := weighted(rng, 30, 40, 30)
	level := 1
	var jobs []job
	if rng.IntN(2) == 0 {
		jobs = append(jobs, job{tr.titles[0], pick(rng, companies[companyTier]), gradYear*12 - 8, gradYear*12 - 5})
	}
	month := gradYear*12 + 5 + rng.IntN(4)
	end := lastYear*12 + 10
	for month < end {
		tenure := 10 + rng.IntN(40)
		j := job{tr.titles[level], pick(rng, companies[max(0, min(2, companyTier+rng.IntN(3)-1))]), month, month + tenure}
		if j.toMonth >= end {
			j.toMonth = 0
		}
		jobs = append(jobs, j)
		month += tenure + rng.IntN(3)
		switch weighted(rng, 55, 30, 10, 5) {
		case 0:
			level++
		case 2:
			level += 2
		case 3:
			level--
		}
		level = max(1, min(len(tr.titles)-1, level))
	}
	if len(jobs) > 5 {
		jobs = jobs[len(jobs)-5:]
	}
	roles := make([]role, len(jobs))
	for i, j := range jobs {
		to := "Present"
		if j.toMonth != 0 {
			to = fmt.Sprintf("%s %d", months[j.toMonth%12], j.toMonth/12)
		}
		roles[len(jobs)-1-i].header = fmt.Sprintf("%s | %s | %s %d - %s",
			j.company, j.title, months[j.fromMonth%12], j.fromMonth/12, to)
	}
	return roles
}

// weighted picks an index with the given relative weights.
func weighted(rng *rand.Rand, weights ...int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	n := rng.IntN(total)
	for i, w := range weights {
		if n < w {
			return i
		}
		n -= w
	}
	return len(weights) - 1
}

// pickSkills picks six to ten distinct skills, in the list's order.
func pickSkills(rng *rand.Rand, skills []string) []string {
	picked := make([]string, 0, 10)
	want := 6 + rng.IntN(5)
	for i, s := range skills {
		// Selection sampling: each skill is taken with the chance that keeps the
		// count exactly at want.
		if rng.IntN(len(skills)-i) < want-len(picked) {
			picked = append(picked, s)
		}
	}
	return picked
}
