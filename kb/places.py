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


# What a country's people and things are called ("the Australian Federal Police", "Thai
# fishing vessels"): a question that says so is about that country.  Left out where the
# word is as often a language or a name in these reports (French, Spanish, Portuguese,
# Arabic), names more than one country (Guinean, Congolese, Dominican) or something else
# (Indian Ocean, American continent, Georgian era).
DEMONYMS = {
    "Afghan": "Afghanistan", "Albanian": "Albania", "Algerian": "Algeria", "Angolan": "Angola",
    "Argentine": "Argentina", "Argentinian": "Argentina", "Armenian": "Armenia", "Australian": "Australia",
    "Austrian": "Austria", "Bangladeshi": "Bangladesh", "Belarusian": "Belarus", "Belgian": "Belgium",
    "Beninese": "Benin", "Bolivian": "Bolivia", "Bosnian": "Bosnia and Herzegovina", "Brazilian": "Brazil",
    "British": "United Kingdom", "Bulgarian": "Bulgaria", "Burkinabe": "Burkina Faso", "Burundian": "Burundi",
    "Cambodian": "Cambodia", "Cameroonian": "Cameroon", "Canadian": "Canada", "Chadian": "Chad",
    "Chilean": "Chile", "Chinese": "China", "Colombian": "Colombia", "Costa Rican": "Costa Rica",
    "Croatian": "Croatia", "Cuban": "Cuba", "Cypriot": "Cyprus", "Djiboutian": "Djibouti",
    "Ecuadorian": "Ecuador", "Egyptian": "Egypt", "Emirati": "United Arab Emirates", "Eritrean": "Eritrea",
    "Estonian": "Estonia", "Ethiopian": "Ethiopia", "Fijian": "Fiji", "Filipino": "Philippines",
    "Gabonese": "Gabon", "Gambian": "Gambia", "Ghanaian": "Ghana", "Guatemalan": "Guatemala",
    "Guyanese": "Guyana", "Haitian": "Haiti", "Honduran": "Honduras", "Indonesian": "Indonesia",
    "Iranian": "Iran", "Iraqi": "Iraq", "Israeli": "Israel", "Ivorian": "Côte d'Ivoire",
    "Jamaican": "Jamaica", "Jordanian": "Jordan", "Kazakh": "Kazakhstan", "Kenyan": "Kenya",
    "Kuwaiti": "Kuwait", "Kyrgyz": "Kyrgyzstan", "Laotian": "Laos", "Latvian": "Latvia",
    "Lebanese": "Lebanon", "Liberian": "Liberia", "Libyan": "Libya", "Lithuanian": "Lithuania",
    "Malawian": "Malawi", "Malaysian": "Malaysia", "Maldivian": "Maldives", "Malian": "Mali",
    "Mauritanian": "Mauritania", "Mauritian": "Mauritius", "Mexican": "Mexico", "Moldovan": "Moldova",
    "Mongolian": "Mongolia", "Moroccan": "Morocco", "Mozambican": "Mozambique", "Namibian": "Namibia",
    "Nepalese": "Nepal", "Nicaraguan": "Nicaragua", "Nigerian": "Nigeria", "Nigerien": "Niger",
    "North Korean": "North Korea", "Omani": "Oman", "Pakistani": "Pakistan", "Palestinian": "Palestine",
    "Panamanian": "Panama", "Paraguayan": "Paraguay", "Peruvian": "Peru", "Qatari": "Qatar",
    "Romanian": "Romania", "Rwandan": "Rwanda", "Salvadoran": "El Salvador", "Saudi": "Saudi Arabia",
    "Senegalese": "Senegal", "Serbian": "Serbia", "Sierra Leonean": "Sierra Leone",
    "Singaporean": "Singapore", "Slovak": "Slovakia", "Slovenian": "Slovenia", "South African": "South Africa",
    "South Korean": "South Korea", "South Sudanese": "South Sudan", "Sri Lankan": "Sri Lanka",
    "Surinamese": "Suriname", "Syrian": "Syria", "Taiwanese": "Taiwan", "Tajik": "Tajikistan",
    "Tanzanian": "Tanzania", "Thai": "Thailand", "Togolese": "Togo", "Tunisian": "Tunisia",
    "Turkmen": "Turkmenistan", "Ugandan": "Uganda", "Ukrainian": "Ukraine", "Uruguayan": "Uruguay",
    "Uzbek": "Uzbekistan", "Venezuelan": "Venezuela", "Vietnamese": "Viet Nam", "Yemeni": "Yemen",
    "Zambian": "Zambia", "Zimbabwean": "Zimbabwe",
}

# Every name a question may use for a place: the lists above, the other names of each
# (Britain, Swaziland, Lao PDR ...) and its people's, except "U.S.", which mostly names an
# agency's country ("the U.S. Department of Labor") rather than the place a question is about.
_QUESTION_NAMES = tuple(
    dict.fromkeys(
        [*PLACES, *(name for names in SAME_COUNTRY for name in names if name != "U.S."), *DEMONYMS]
    )
)


@functools.lru_cache(maxsize=1)
def _names_pattern() -> re.Pattern:
    names = sorted((name.replace("'", "['’]") for name in map(re.escape, _QUESTION_NAMES)), key=len, reverse=True)
    return re.compile(r"(?<![\w-])(" + "|".join(names) + r")(?![\w-])")


def places_named(text: str) -> list[str]:
    """The places (countries, states, provinces) ``text`` names, as written (a people's
    name as its country's: "Australian" → "Australia"), in order, without repeats."""
    return list(dict.fromkeys(DEMONYMS.get(name, name) for name in _names_pattern().findall(text)))


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


def _all_names() -> dict[str, tuple[str, ...]]:
    """Any name of a place → all its names, its people's included."""
    groups = {names[0]: list(names) for names in SAME_COUNTRY}
    group_of = {name: names[0] for names in SAME_COUNTRY for name in names}
    for demonym, country in DEMONYMS.items():
        groups.setdefault(group_of.get(country, country), [country]).append(demonym)
    return {_plain(name): tuple(names) for names in groups.values() for name in names}


_NAMES_OF = _all_names()
