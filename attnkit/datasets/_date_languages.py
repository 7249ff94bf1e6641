"""Month names, weekday names and templates for the date generator.

Each language lists full month names, the abbreviations people write, the
weekday names (Monday first), how the day is written, and templates.
Template fields: {day} (as the language writes a day in prose), {dd}/{d}
(numeric day with/without zero), {mm}/{m} (numeric month), {month}, {mon}
(abbreviation), {weekday}, {year}. Numeric templates that put the day and
month in a language's order are marked "numeric": the generator emits them
only when the other order cannot read them as another date.
"""

ENGLISH = {
    "months": ["January", "February", "March", "April", "May", "June", "July",
               "August", "September", "October", "November", "December"],
    "abbreviations": ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                      "Sep", "Oct", "Nov", "Dec"],
    "weekdays": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                 "Saturday", "Sunday"],
    "templates": [
        "{month} {day}, {year}", "{day} {month} {year}", "{mon} {day}, {year}",
        "{mon}. {d}, {year}", "the {day} of {month} {year}",
        "{weekday}, {month} {day}, {year}", "{month} {d} {year}",
        "{d} {mon} {year}",
    ],
    "numeric": ["{mm}/{dd}/{year}", "{m}/{d}/{year}"],
}

FRENCH = {
    "months": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet",
               "août", "septembre", "octobre", "novembre", "décembre"],
    "abbreviations": ["janv.", "févr.", "mars", "avr.", "mai", "juin",
                      "juil.", "août", "sept.", "oct.", "nov.", "déc."],
    "weekdays": ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi",
                 "dimanche"],
    "templates": [
        "{day} {month} {year}", "le {day} {month} {year}", "{day} {mon} {year}",
        "{weekday} {day} {month} {year}", "le {weekday} {day} {month} {year}",
    ],
    "numeric": ["{dd}/{mm}/{year}", "{d}/{m}/{year}", "{dd}-{mm}-{year}"],
}

SPANISH = {
    "months": ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio",
               "agosto", "septiembre", "octubre", "noviembre", "diciembre"],
    "abbreviations": ["ene", "feb", "mar", "abr", "may", "jun", "jul", "ago",
                      "sept", "oct", "nov", "dic"],
    "weekdays": ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado",
                 "domingo"],
    "templates": [
        "{day} de {month} de {year}", "el {day} de {month} de {year}",
        "{weekday}, {day} de {month} de {year}", "{day} {mon} {year}",
        "{day} de {month} del {year}",
    ],
    "numeric": ["{dd}/{mm}/{year}", "{d}/{m}/{year}", "{d}-{m}-{year}"],
}

GERMAN = {
    "months": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli",
               "August", "September", "Oktober", "November", "Dezember"],
    "abbreviations": ["Jan.", "Feb.", "März", "Apr.", "Mai", "Juni", "Juli",
                      "Aug.", "Sept.", "Okt.", "Nov.", "Dez."],
    "weekdays": ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag",
                 "Samstag", "Sonntag"],
    "templates": [
        "{day} {month} {year}", "am {day} {month} {year}", "{day} {mon} {year}",
        "{weekday}, {day} {month} {year}", "{weekday}, den {day} {month} {year}",
    ],
    "numeric": ["{dd}.{mm}.{year}", "{d}.{m}.{year}"],
}

PORTUGUESE = {
    "months": ["janeiro", "fevereiro", "março", "abril", "maio", "junho",
               "julho", "agosto", "setembro", "outubro", "novembro",
               "dezembro"],
    "abbreviations": ["jan", "fev", "mar", "abr", "mai", "jun", "jul", "ago",
                      "set", "out", "nov", "dez"],
    "weekdays": ["segunda-feira", "terça-feira", "quarta-feira",
                 "quinta-feira", "sexta-feira", "sábado", "domingo"],
    "templates": [
        "{day} de {month} de {year}", "{weekday}, {day} de {month} de {year}",
        "{day} {mon} {year}", "dia {day} de {month} de {year}",
    ],
    "numeric": ["{dd}/{mm}/{year}", "{d}/{m}/{year}", "{dd}-{mm}-{year}"],
}

LANGUAGES = {
    "en": ENGLISH, "fr": FRENCH, "es": SPANISH, "de": GERMAN,
    "pt": PORTUGUESE,
}


def day_in_prose(language, day, ordinal):
    """How `language` writes day `day` in running text."""
    if language == "en":
        if not ordinal:
            return str(day)
        suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
        return f"{day}{suffix}"
    if language == "fr":
        return "1er" if day == 1 and ordinal else str(day)
    if language == "de":
        return f"{day}."  # German writes the day as an ordinal number
    if language == "pt":
        return "1º" if day == 1 and ordinal else str(day)
    return str(day)
