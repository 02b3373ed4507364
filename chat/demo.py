"""The demo school board: one organisation, two schools, six groups, eleven staff,
thirty students and about forty guardians, built deterministically.

It includes what makes the rules interesting: separated parents (two
guardians of one child with different e-mails, not linked to each other), a
parent with children in both schools, siblings, and a transport operator.
"""

from __future__ import annotations

from typing import Any

ORG = "CSS-DEMO"
SCHOOLS = [
    ("ERABLES", "École primaire des Érables"),
    ("FLEUVE", "École secondaire du Fleuve"),
]
NOTICE_FR = (
    "Le délai de réponse peut varier d'un membre du personnel à l'autre. "
    "Merci de votre patience : nous vous répondrons pendant les heures de travail."
)
NOTICE_EN = (
    "Response times vary from one staff member to another. "
    "Thank you for your patience: we answer during working hours."
)

FIRST = ["Rose", "Éli", "Emma", "William", "Alice", "Thomas", "Florence", "Liam", "Rosalie", "Jacob",
         "Charlotte", "Nathan", "Zoé", "Édouard", "Juliette", "Félix", "Camille", "Samuel", "Maëlle", "Louis",
         "Chloé", "Olivier", "Mia", "Arnaud", "Clara", "Gabriel", "Éloïse", "Antoine", "Béatrice", "Hugo"]
LAST = ["Simard", "Gagnon", "Roy", "Côté", "Bouchard", "Gauthier", "Morin", "Lavoie", "Fortin", "Gagné",
        "Ouellet", "Pelletier", "Bélanger", "Lévesque", "Bergeron"]
PARENT_FIRST = ["Marie", "Jean", "Sophie", "Martin", "Isabelle", "Patrick", "Julie", "Stéphane", "Nathalie",
                "Éric", "Caroline", "Sylvain", "Mélanie", "François", "Geneviève", "Luc", "Annie", "Marc",
                "Valérie", "Daniel"]

# The people `python -m chat demo` prints tokens for.
DEMO_PEOPLE = [
    "marie.tremblay@parent.test",   # mother of Léa (Érables) and Noah (Fleuve)
    "jean.tremblay@parent.test",    # Léa's father, separated: his own e-mail
    "nadia.chabot@erables.test",    # Léa's teacher (group ERA-301)
    "direction@erables.test",       # the principal of Érables
]


def _slug(name: str) -> str:
    table = str.maketrans("éèêëàâäîïôöûüçÉÈÊÀÂÎÔÛÇ", "eeeeaaaiioouucEEEAAIOUC")
    return name.translate(table).lower().replace(" ", "-")


def build() -> dict[str, Any]:
    """The demo directory as the JSON structure ``chat.directory`` loads."""
    groups = []
    staff: list[dict[str, Any]] = []
    teachers = {
        "ERA-101": "Karine Dubé", "ERA-201": "Paul Girard", "ERA-301": "Nadia Chabot",
        "FLE-101": "Simon Leclerc", "FLE-201": "Audrey Nadeau", "FLE-301": "Michel Poirier",
    }
    for code, _ in SCHOOLS:
        prefix = code[:3]
        for level in (1, 2, 3):
            group = f"{prefix}-{level}01"
            groups.append({"code": group, "school": code, "name": f"Groupe {level}01"})
            name = teachers[group]
            domain = f"{code.lower()}.test"
            staff.append({"email": f"{_slug(name).replace('-', '.')}@{domain}", "name": name,
                          "role": "teacher", "schools": [code], "groups": [group]})
    staff += [
        {"email": "direction@erables.test", "name": "Hélène Bisson", "role": "direction", "schools": ["ERABLES"]},
        {"email": "secretariat@erables.test", "name": "Diane Caron", "role": "staff", "schools": ["ERABLES"]},
        {"email": "direction@fleuve.test", "name": "Robert Allard", "role": "direction", "schools": ["FLEUVE"]},
        {"email": "psychoeducation@fleuve.test", "name": "Julie Sirois", "role": "staff", "schools": ["FLEUVE"],
         "language": "en",
         # Part-time: her own hours, within the school's (R15).
         "working_hours": {"tue": [["08:30", "12:00"]], "thu": [["08:30", "15:30"]]}},
        {"email": "transport@autobus.test", "name": "Autobus Laval-Démo", "role": "transport",
         "schools": ["ERABLES", "FLEUVE"]},
    ]
    students = []
    for i in range(30):
        school = "ERABLES" if i < 15 else "FLEUVE"
        group = groups[(i // 5)]["code"]
        first, last = FIRST[i], LAST[i // 2]
        born_year = 2017 - (i % 15) // 5 if school == "ERABLES" else 2012 - (i % 15) // 5
        students.append({
            "fiche": f"{1000001 + i:07d}",
            "code_permanent": f"{(last[:3] + first[0]).upper().translate(str.maketrans('ÉÈÊÔÂÎÛ', 'EEEOAIU'))}"
                              f"{(i % 28) + 1:02d}{((i * 5) % 12) + 1:02d}{born_year % 100:02d}{10 + i:02d}",
            "first_name": first, "last_name": last,
            "date_of_birth": f"{born_year}-{((i * 5) % 12) + 1:02d}-{(i % 28) + 1:02d}",
            "school": school, "group": group,
        })
    guardians: list[dict[str, Any]] = []
    # Students are in pairs sharing a last name: siblings for even pairs, cousins otherwise.
    for pair in range(15):
        a, b = students[2 * pair], students[2 * pair + 1]
        last = a["last_name"]
        mother, father = PARENT_FIRST[pair % 20], PARENT_FIRST[(pair + 7) % 20]
        if pair % 3 == 0:  # siblings, two guardians sharing both children
            kids = [[a["fiche"], b["fiche"]], [a["fiche"], b["fiche"]]]
        elif pair % 3 == 1:  # two families: one guardian each, plus one with two guardians
            kids = [[a["fiche"]], [b["fiche"]], [b["fiche"]]]
        else:  # separated parents of one child each side
            kids = [[a["fiche"]], [a["fiche"]], [b["fiche"]]]
        names = [mother, father, PARENT_FIRST[(pair + 13) % 20]]
        for n, fiches in enumerate(kids):
            name = f"{names[n]} {last}"
            guardians.append({"email": f"{_slug(names[n])}.{_slug(last)}.{pair}@parent.test", "name": name,
                              "students": fiches, "language": "en" if (pair + n) % 5 == 4 else "fr"})
    # The named demo family: Marie Tremblay has Léa at Érables (group 301) and Noah at
    # Fleuve; Léa's father Jean, separated, has his own e-mail and only Léa.
    lea = next(s for s in students if s["group"] == "ERA-301")
    noah = next(s for s in students if s["school"] == "FLEUVE")
    lea.update(first_name="Léa", last_name="Tremblay")
    noah.update(first_name="Noah", last_name="Tremblay")
    for g in guardians:  # nobody else is guardian of the named family's children
        g["students"] = [f for f in g["students"] if f not in (lea["fiche"], noah["fiche"])]
    guardians = [g for g in guardians if g["students"]]
    guardians += [
        {"email": "marie.tremblay@parent.test", "name": "Marie Tremblay",
         "students": [lea["fiche"], noah["fiche"]]},
        {"email": "jean.tremblay@parent.test", "name": "Jean Tremblay", "students": [lea["fiche"]],
         "language": "en"},
    ]
    # Every demo family has associated its children already (R20), as families that
    # used a previous portal would; Sophie Côté, Noah's stepmother, is on file for him
    # but has not: she sees nothing of him until she adds him (fiche, permanent code or NIP).
    for g in guardians:
        g["associated"] = True
    guardians.append({"email": "sophie.cote@parent.test", "name": "Sophie Côté", "students": [noah["fiche"]]})
    return {
        "organisations": [{"code": ORG, "name": "Centre de services scolaire Démo"}],
        "schools": [{"code": code, "organisation": ORG, "name": name, "timezone": "America/Toronto",
                     "working_hours": {day: [["08:00", "16:00"]] for day in ("mon", "tue", "wed", "thu", "fri")},
                     # R15: the school's own closed days on top of Quebec's holidays.
                     "closed_days": [["2026-12-21", "2027-01-05"], "2027-02-12", ["2027-03-01", "2027-03-05"]],
                     "notice_fr": NOTICE_FR, "notice_en": NOTICE_EN} for code, name in SCHOOLS],
        "groups": groups,
        "staff": staff,
        "students": students,
        "guardians": guardians,
    }
