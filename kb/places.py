"""Places named in a question, and whether a passage mentions them.

A question about one country ("When did Ethiopia ratify ...?") or one state or province
with laws of its own ("under California's transparency law") is not answered by passages
about the same subject elsewhere, however close they are: the default answerer abstains
when none of its best passages mentions a place the question names.

Names are matched as written in the question (capitalised, whole words, so "Chad" the
country and not "chad"); a passage mentions a country when the name occurs in it in any
case.  Ambiguous abbreviations (US, UK, UAE) are left out: "US Labor Department" names
an organisation, and reports write "U.S." as often as "US".
"""

from __future__ import annotations

import functools
import re

from kb.text import normalise_for_matching

COUNTRIES = (
    "Afghanistan", "Albania", "Algeria", "Andorra", "Angola", "Antigua and Barbuda", "Argentina",
    "Armenia", "Australia", "Austria", "Azerbaijan", "Bahamas", "Bahrain", "Bangladesh", "Barbados",
    "Belarus", "Belgium", "Belize", "Benin", "Bhutan", "Bolivia", "Bosnia and Herzegovina", "Botswana",
    "Brazil", "Brunei", "Bulgaria", "Burkina Faso", "Burundi", "Cabo Verde", "Cape Verde", "Cambodia",
    "Cameroon", "Canada", "Central African Republic", "Chad", "Chile", "China", "Colombia", "Comoros",
    "Congo", "Costa Rica", "Côte d'Ivoire", "Cote d'Ivoire", "Ivory Coast", "Croatia", "Cuba", "Cyprus",
    "Czechia", "Czech Republic", "Denmark", "Djibouti", "Dominica", "Dominican Republic", "Ecuador",
    "Egypt", "El Salvador", "Equatorial Guinea", "Eritrea", "Estonia", "Eswatini", "Ethiopia", "Fiji",
    "Finland", "France", "Gabon", "Gambia", "Georgia", "Germany", "Ghana", "Greece", "Grenada",
    "Guatemala", "Guinea", "Guinea-Bissau", "Guyana", "Haiti", "Honduras", "Hungary", "Iceland", "India",
    "Indonesia", "Iran", "Iraq", "Ireland", "Israel", "Italy", "Jamaica", "Japan", "Jordan", "Kazakhstan",
    "Kenya", "Kiribati", "Kuwait", "Kyrgyzstan", "Laos", "Lao People's Democratic Republic", "Latvia",
    "Lebanon", "Lesotho", "Liberia", "Libya", "Liechtenstein", "Lithuania", "Luxembourg", "Madagascar",
    "Malawi", "Malaysia", "Maldives", "Mali", "Malta", "Marshall Islands", "Mauritania", "Mauritius",
    "Mexico", "Micronesia", "Moldova", "Monaco", "Mongolia", "Montenegro", "Morocco", "Mozambique",
    "Myanmar", "Burma", "Namibia", "Nauru", "Nepal", "Netherlands", "New Zealand", "Nicaragua", "Niger",
    "Nigeria", "North Korea", "North Macedonia", "Norway", "Oman", "Pakistan", "Palau", "Palestine",
    "Panama", "Papua New Guinea", "Paraguay", "Peru", "Philippines", "Poland", "Portugal", "Qatar",
    "Romania", "Russia", "Russian Federation", "Rwanda", "Saint Kitts and Nevis", "Saint Lucia",
    "Saint Vincent and the Grenadines", "Samoa", "San Marino", "Sao Tome and Principe", "Saudi Arabia",
    "Senegal", "Serbia", "Seychelles", "Sierra Leone", "Singapore", "Slovakia", "Slovenia",
    "Solomon Islands", "Somalia", "Somaliland", "South Africa", "South Korea", "South Sudan", "Spain",
    "Sri Lanka", "Sudan", "Suriname", "Sweden", "Switzerland", "Syria", "Syrian Arab Republic", "Taiwan",
    "Tajikistan", "Tanzania", "Thailand", "Timor-Leste", "Togo", "Tonga", "Trinidad and Tobago",
    "Tunisia", "Turkey", "Türkiye", "Turkmenistan", "Tuvalu", "Uganda", "Ukraine",
    "United Arab Emirates", "United Kingdom", "United States", "Uruguay", "Uzbekistan", "Vanuatu",
    "Venezuela", "Viet Nam", "Vietnam", "Yemen", "Zambia", "Zimbabwe", "Kosovo", "Hong Kong",
)


# States, provinces and nations within a country that make their own laws on trafficking,
# labour and child protection.  "Washington" is left out (the capital, a newspaper, a
# person); "Victoria" too (a name).
REGIONS = (
    # the United States
    "Alabama", "Alaska", "Arizona", "Arkansas", "California", "Colorado", "Connecticut", "Delaware",
    "Florida", "Hawaii", "Idaho", "Illinois", "Indiana", "Iowa", "Kansas", "Kentucky", "Louisiana",
    "Maine", "Maryland", "Massachusetts", "Michigan", "Minnesota", "Mississippi", "Missouri", "Montana",
    "Nebraska", "Nevada", "New Hampshire", "New Jersey", "New Mexico", "New York", "North Carolina",
    "North Dakota", "Ohio", "Oklahoma", "Oregon", "Pennsylvania", "Rhode Island", "South Carolina",
    "South Dakota", "Tennessee", "Texas", "Utah", "Vermont", "Virginia", "West Virginia", "Wisconsin",
    "Wyoming", "Puerto Rico",
    # the United Kingdom
    "England", "Scotland", "Wales", "Northern Ireland",
    # Canada
    "Alberta", "British Columbia", "Manitoba", "New Brunswick", "Newfoundland and Labrador",
    "Nova Scotia", "Ontario", "Prince Edward Island", "Quebec", "Québec", "Saskatchewan",
    # Australia
    "New South Wales", "Queensland", "South Australia", "Tasmania", "Western Australia",
    "Northern Territory",
)

PLACES = COUNTRIES + REGIONS

# Names of one place, any of which a passage may use for it.
SAME_COUNTRY = (
    ("Côte d'Ivoire", "Cote d'Ivoire", "Ivory Coast"),
    ("Myanmar", "Burma"),
    ("Türkiye", "Turkey"),
    ("Viet Nam", "Vietnam"),
    ("Czechia", "Czech Republic"),
    ("Cabo Verde", "Cape Verde"),
    ("Laos", "Lao People's Democratic Republic", "Lao PDR"),
    ("Russia", "Russian Federation"),
    ("Syria", "Syrian Arab Republic"),
    ("Eswatini", "Swaziland"),
    ("North Korea", "Democratic People's Republic of Korea"),
    ("South Korea", "Republic of Korea"),
    ("Moldova", "Republic of Moldova"),
    ("Iran", "Islamic Republic of Iran"),
    ("Palestine", "State of Palestine", "Occupied Palestinian Territory"),
    ("United Kingdom", "Great Britain", "Britain"),
    ("United States", "United States of America", "U.S."),
    ("Quebec", "Québec"),
)


# Every name a question may use for a place: the lists above and the other names of each
# (Britain, Swaziland, Lao PDR ...), except "U.S.", which mostly names an agency's country
# ("the U.S. Department of Labor") rather than the place a question is about.
_QUESTION_NAMES = tuple(
    dict.fromkeys([*PLACES, *(name for names in SAME_COUNTRY for name in names if name != "U.S.")])
)


@functools.lru_cache(maxsize=1)
def _names_pattern() -> re.Pattern:
    names = sorted((name.replace("'", "['’]") for name in map(re.escape, _QUESTION_NAMES)), key=len, reverse=True)
    return re.compile(r"(?<![\w-])(" + "|".join(names) + r")(?![\w-])")


def places_named(text: str) -> list[str]:
    """The places (countries, states, provinces) ``text`` names, as written, in order,
    without repeats."""
    return list(dict.fromkeys(_names_pattern().findall(text)))


def mentions(text: str, place: str) -> bool:
    """Whether ``text`` mentions ``place`` by any of its names (any case, whole words)."""
    plain = _plain(text)
    return any(
        re.search(r"(?<![\w-])" + re.escape(_plain(name)) + r"(?![\w-])", plain) is not None
        for name in _other_names(place)
    )


def _other_names(place: str) -> tuple[str, ...]:
    return _NAMES_OF.get(_plain(place), (place,))


def _plain(text: str) -> str:
    return normalise_for_matching(text).replace("’", "'")


_NAMES_OF = {_plain(name): names for names in SAME_COUNTRY for name in names}  # any name → all its names
